"""Flow-matching Euler in numpy, reproducing diffusers' FlowMatchEulerDiscreteScheduler (static shift only).

The model predicts the velocity v = noise - x0 along x_sigma = (1 - sigma) * x0 + sigma * noise,
so one Euler step is x + (sigma_next - sigma) * v.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ._common import F32, first_step_index, from_config

# "flow_prediction" is what flow-sigma configs of other diffusers schedulers (UniPC, DPM) call it.
PREDICTION_TYPES = ("flow", "flow_prediction")
# Options diffusers has and this port leaves out: each must keep its default.
UNSUPPORTED: dict[str, Any] = {
    "use_dynamic_shifting": False,
    "invert_sigmas": False,
    "shift_terminal": None,
    "use_karras_sigmas": False,
    "use_exponential_sigmas": False,
    "use_beta_sigmas": False,
    "stochastic_sampling": False,
}


def shift_sigmas(sigmas: np.ndarray, shift: float) -> np.ndarray:
    """The resolution shift sigma' = s * sigma / (1 + (s - 1) * sigma), in the dtype of sigmas."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


class FlowMatchEulerScheduler:
    """Euler steps on the flow-matching ODE with a fixed timestep shift (the Wan family's sampler)."""

    order = 1

    def __init__(self, num_train_timesteps: int = 1000, shift: float = 1.0, prediction_type: str = "flow") -> None:
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"flow-match Euler needs prediction_type 'flow' (velocity), got {prediction_type!r}")
        self.num_train_timesteps = num_train_timesteps
        self.shift = float(shift)
        train = np.linspace(1, num_train_timesteps, num_train_timesteps, dtype=F32)[::-1] / F32(num_train_timesteps)
        train = shift_sigmas(train, self.shift).astype(F32)
        # diffusers spans the inference schedule between the already shifted training sigmas, then shifts again.
        self.sigma_max, self.sigma_min = float(train[0]), float(train[-1])
        self.sigmas = train
        self.timesteps = train * F32(num_train_timesteps)
        self.init_noise_sigma = 1.0
        self.num_inference_steps: int | None = None
        self._step_index: int | None = None

    @classmethod
    def from_config(cls, config: Mapping[str, Any], **overrides: Any) -> "FlowMatchEulerScheduler":
        """Build from a diffusers scheduler_config.json dict; a UniPC/DPM-style `flow_shift` stands in for `shift`."""
        merged = dict(config)
        if "shift" not in merged and "flow_shift" in merged:
            merged["shift"] = merged["flow_shift"]
        return from_config(cls, UNSUPPORTED, merged, **overrides)

    def set_timesteps(self, num_inference_steps: int) -> None:
        """Choose the sigmas (with a trailing 0) and timesteps = sigma * num_train_timesteps."""
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
        n = self.num_train_timesteps
        ts = np.linspace(self.sigma_max * n, self.sigma_min * n, num_inference_steps)
        sigmas = shift_sigmas(ts / n, self.shift).astype(F32)
        self.timesteps = sigmas * F32(n)
        self.sigmas = np.concatenate([sigmas, np.zeros(1, dtype=F32)])
        self.num_inference_steps = num_inference_steps
        self._step_index = None

    def scale_model_input(self, sample: np.ndarray, timestep: Any = None) -> np.ndarray:
        """Flow matching does not scale the denoiser input."""
        return sample

    def step(
        self,
        model_output: np.ndarray,
        timestep: Any,
        sample: np.ndarray,
        noise: np.ndarray | None = None,
    ) -> np.ndarray:
        """One Euler step along the predicted velocity; `timestep` only places the first call; `noise` is unused."""
        if self.num_inference_steps is None:
            raise ValueError("call set_timesteps before step")
        if self._step_index is None:
            self._step_index = first_step_index(self.timesteps, F32(timestep), None)
        i = self._step_index
        dt = self.sigmas[i + 1] - self.sigmas[i]
        prev = np.asarray(sample, dtype=F32) + dt * np.asarray(model_output, dtype=F32)
        self._step_index += 1
        return prev.astype(F32, copy=False)

    def scale_noise(self, sample: np.ndarray, timestep: Any, noise: np.ndarray) -> np.ndarray:
        """Forward process to the sigma of `timestep`: (1 - sigma) * sample + sigma * noise."""
        sigma = self.sigmas[first_step_index(self.timesteps, F32(timestep), None)]
        return (sigma * np.asarray(noise, dtype=F32) + (F32(1.0) - sigma) * np.asarray(sample, dtype=F32)).astype(F32)
