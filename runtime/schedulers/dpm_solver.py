"""DPM-Solver++ (2M) in numpy, reproducing diffusers' DPMSolverMultistepScheduler with algorithm_type="dpmsolver++".

Scalars are float32 and combined in diffusers' operation order, so the result matches to float32 rounding.
"""

from __future__ import annotations

from typing import Any, Mapping, cast

import numpy as np

from ._common import (
    F32,
    check_prediction_type,
    check_spacing,
    exp32,
    f32,
    first_step_index,
    from_config,
    log32,
    per_sample,
    solver_alphas_cumprod,
)

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample", "flow_prediction")
SPACINGS = ("linspace", "leading", "trailing")
# diffusers maps these legacy solver types onto midpoint.
SOLVER_TYPES = {"midpoint": "midpoint", "heun": "heun", "logrho": "midpoint", "bh1": "midpoint", "bh2": "midpoint"}
# Options diffusers has and this port leaves out: each must keep its default.
UNSUPPORTED: dict[str, Any] = {
    "algorithm_type": "dpmsolver++",
    "thresholding": False,
    "variance_type": None,
    "use_exponential_sigmas": False,
    "use_beta_sigmas": False,
    "use_lu_lambdas": False,
    "use_dynamic_shifting": False,
}


def dpm_timesteps(num_train_timesteps: int, num_inference_steps: int, spacing: str, steps_offset: int, last_timestep: int) -> np.ndarray:
    """DPMSolverMultistepScheduler.set_timesteps' integer timesteps before any sigma conversion."""
    if spacing == "linspace":
        ts = np.linspace(0, last_timestep - 1, num_inference_steps + 1).round()[::-1][:-1]
        return ts.astype(np.int64)
    if spacing == "leading":
        ratio = last_timestep // (num_inference_steps + 1)
        leading = (np.arange(0, num_inference_steps + 1) * ratio).round()[::-1][:-1]
        return leading.astype(np.int64) + steps_offset
    if spacing == "trailing":
        stride = num_train_timesteps / num_inference_steps
        return np.arange(last_timestep, 0, -stride).round().astype(np.int64) - 1
    raise ValueError(f"timestep_spacing {spacing!r} is not supported; use one of {', '.join(SPACINGS)}")


def karras_sigmas(train_sigmas: np.ndarray, num_inference_steps: int, rho: float = 7.0) -> np.ndarray:
    """Karras et al. (2022) sigmas spanning the training sigma table (ascending in t), descending, float64."""
    sigma_min, sigma_max = float(train_sigmas[0]), float(train_sigmas[-1])
    ramp = np.linspace(0, 1, num_inference_steps)
    min_inv_rho, max_inv_rho = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho


def sigma_to_t(sigma: np.ndarray, log_sigmas: np.ndarray) -> np.ndarray:
    """Fractional training timestep of each sigma, by interpolation in log-sigma (diffusers' _sigma_to_t)."""
    log_sigma = np.log(np.maximum(sigma, 1e-10))
    dists = log_sigma - log_sigmas[:, np.newaxis]
    low_idx = np.cumsum((dists >= 0), axis=0).argmax(axis=0).clip(max=log_sigmas.shape[0] - 2)
    high_idx = low_idx + 1
    low, high = log_sigmas[low_idx], log_sigmas[high_idx]
    w = np.clip((low - log_sigma) / (low - high), 0, 1)
    return ((1 - w) * low_idx + w * high_idx).reshape(sigma.shape)


def flow_sigmas(num_train_timesteps: int, num_inference_steps: int, shift: float) -> np.ndarray:
    """DPMSolverMultistepScheduler's flow sigmas in float64: 1 - linspace(1, 1/N), shifted, descending, the 0 left out."""
    sigmas = 1.0 - np.linspace(1, 1 / num_train_timesteps, num_inference_steps + 1)
    return np.flip(shift * sigmas / (1 + (shift - 1) * sigmas))[:-1].copy()


def alpha_sigma(sigma: np.float32) -> tuple[np.float32, np.float32]:
    """(alpha_t, sigma_t) of the VP process for a VE sigma = sigma_t / alpha_t."""
    alpha = f32(1.0) / np.sqrt(sigma * sigma + f32(1.0))
    return alpha, sigma * alpha


def log_snr(alpha: np.float32, sigma: np.float32) -> np.float32:
    """lambda = log(alpha) - log(sigma), the half log-SNR the solver steps in."""
    return log32(alpha) - log32(sigma)


class DPMSolverMultistepScheduler:
    """DPM-Solver++ multistep (orders 1 and 2); the previous model output is kept between steps."""

    order = 1

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: Any = None,
        solver_order: int = 2,
        prediction_type: str = "epsilon",
        solver_type: str = "midpoint",
        lower_order_final: bool = True,
        euler_at_final: bool = False,
        use_karras_sigmas: bool = False,
        final_sigmas_type: str = "zero",
        lambda_min_clipped: float = -float("inf"),
        timestep_spacing: str = "linspace",
        steps_offset: int = 0,
        rescale_betas_zero_snr: bool = False,
        use_flow_sigmas: bool = False,
        flow_shift: float = 1.0,
    ) -> None:
        check_prediction_type(prediction_type, PREDICTION_TYPES)
        if (prediction_type == "flow_prediction") != bool(use_flow_sigmas):
            raise ValueError("DPM-Solver++: prediction_type 'flow_prediction' goes with use_flow_sigmas=True, and only with it")
        if use_flow_sigmas and use_karras_sigmas:
            raise ValueError("DPM-Solver++: use_karras_sigmas with use_flow_sigmas is not supported")
        if solver_order not in (1, 2):
            raise ValueError(f"DPM-Solver++: solver_order={solver_order} is not supported (1 or 2)")
        if solver_type not in SOLVER_TYPES:
            raise ValueError(f"DPM-Solver++: solver_type {solver_type!r} is not supported; use midpoint or heun")
        if final_sigmas_type not in ("zero", "sigma_min"):
            raise ValueError(f"final_sigmas_type {final_sigmas_type!r} is not supported; use zero or sigma_min")
        check_spacing(timestep_spacing, SPACINGS)
        alphas_cumprod = solver_alphas_cumprod(num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas, rescale_betas_zero_snr)
        self.alphas_cumprod = alphas_cumprod
        self.train_sigmas = np.sqrt((F32(1.0) - alphas_cumprod) / alphas_cumprod)
        self.num_train_timesteps = num_train_timesteps
        self.beta_schedule = beta_schedule
        self.solver_order = solver_order
        self.prediction_type = prediction_type
        self.solver_type = SOLVER_TYPES[solver_type]
        self.lower_order_final = lower_order_final
        self.euler_at_final = euler_at_final
        self.use_karras_sigmas = use_karras_sigmas
        self.final_sigmas_type = final_sigmas_type
        self.lambda_min_clipped = lambda_min_clipped
        self.timestep_spacing = timestep_spacing
        self.use_flow_sigmas = bool(use_flow_sigmas)
        self.flow_shift = float(flow_shift)
        self.steps_offset = steps_offset
        self.init_noise_sigma = 1.0
        self.num_inference_steps: int | None = None
        self.sigmas = self.train_sigmas
        self._timesteps_int = np.arange(num_train_timesteps)[::-1].copy()
        self.timesteps = self._timesteps_int.astype(F32)
        self._reset()

    @classmethod
    def from_config(cls, config: Mapping[str, Any], **overrides: Any) -> "DPMSolverMultistepScheduler":
        """Build from a diffusers scheduler_config.json dict; keys this port does not take are ignored."""
        return from_config(cls, UNSUPPORTED, config, **overrides)

    def _reset(self) -> None:
        """Forget the multistep history."""
        self.model_outputs: list[np.ndarray | None] = [None] * self.solver_order
        self.lower_order_nums = 0
        self._step_index: int | None = None  # placed by the first step(), as in diffusers

    def _last_timestep(self) -> int:
        """One past the largest usable training timestep once lambda_min_clipped cuts the low-SNR end."""
        alpha, sigma = np.sqrt(self.alphas_cumprod), np.sqrt(F32(1.0) - self.alphas_cumprod)
        with np.errstate(divide="ignore"):
            lambdas = np.log(alpha.astype(np.float64)).astype(F32) - np.log(sigma.astype(np.float64)).astype(F32)
        clipped = int(np.searchsorted(lambdas[::-1], self.lambda_min_clipped))
        return self.num_train_timesteps - clipped

    def set_timesteps(self, num_inference_steps: int) -> None:
        """Choose timesteps and sigmas and reset the solver history."""
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
        ts = dpm_timesteps(
            self.num_train_timesteps,
            num_inference_steps,
            self.timestep_spacing,
            self.steps_offset,
            self._last_timestep(),
        )
        sigmas = self.train_sigmas
        if self.use_flow_sigmas:
            step_sigmas = flow_sigmas(self.num_train_timesteps, num_inference_steps, self.flow_shift)
            ts = step_sigmas * self.num_train_timesteps  # truncated to int64 below, as in diffusers
        elif self.use_karras_sigmas:
            step_sigmas = karras_sigmas(sigmas, num_inference_steps)
            fractional = sigma_to_t(step_sigmas, np.log(sigmas))
            # diffusers keeps cosine-schedule timesteps fractional, then truncates them on the cast to int64.
            ts = fractional if self.beta_schedule == "squaredcos_cap_v2" else fractional.round()
        else:
            step_sigmas = np.interp(ts, np.arange(0, len(sigmas)), sigmas)
        last = f32(0.0) if self.final_sigmas_type == "zero" else self.train_sigmas[0]
        self.sigmas = np.concatenate([step_sigmas, [last]]).astype(F32)
        self._timesteps_int = np.asarray(ts).astype(np.int64)
        self.timesteps = self._timesteps_int.astype(F32)
        self.num_inference_steps = len(self._timesteps_int)
        self._reset()

    def scale_model_input(self, sample: np.ndarray, timestep: Any = None) -> np.ndarray:
        """DPM-Solver does not scale the denoiser input."""
        return sample

    def _alpha_sigma(self, sigma: np.float32) -> tuple[np.float32, np.float32]:
        """(alpha_t, sigma_t) of a schedule sigma: 1 - sigma and sigma for flow sigmas, the VP pair otherwise."""
        if self.use_flow_sigmas:
            return f32(1.0) - f32(sigma), f32(sigma)
        return alpha_sigma(f32(sigma))

    def _to_x0(self, model_output: np.ndarray, sample: np.ndarray) -> np.ndarray:
        """The data prediction x0 that DPM-Solver++ extrapolates."""
        if self.prediction_type == "sample":
            return model_output
        if self.prediction_type == "flow_prediction":
            return sample - self.sigmas[self._step_index] * model_output
        alpha, sigma = self._alpha_sigma(self.sigmas[self._step_index])
        if self.prediction_type == "epsilon":
            return (sample - sigma * model_output) / alpha
        return alpha * sample - sigma * model_output

    def _first_order(self, x0: np.ndarray, sample: np.ndarray) -> np.ndarray:
        """DPM-Solver++ 1 (equivalent to DDIM) from sigmas[i] to sigmas[i + 1]."""
        i = self._step_index
        assert i is not None  # placed by step() before the solver runs
        alpha_t, sigma_t = self._alpha_sigma(self.sigmas[i + 1])
        alpha_s, sigma_s = self._alpha_sigma(self.sigmas[i])
        # Stepping to sigma 0 gives h = inf and exp(-h) = 0, so this returns x0, as diffusers does.
        h = log_snr(alpha_t, sigma_t) - log_snr(alpha_s, sigma_s)
        return (sigma_t / sigma_s) * sample - (alpha_t * (exp32(-h) - f32(1.0))) * x0

    def _second_order(self, sample: np.ndarray) -> np.ndarray:
        """DPM-Solver++ 2M from sigmas[i] to sigmas[i + 1] using the last two data predictions."""
        i = self._step_index
        assert i is not None  # placed by step() before the solver runs
        alpha_t, sigma_t = self._alpha_sigma(self.sigmas[i + 1])
        alpha_s0, sigma_s0 = self._alpha_sigma(self.sigmas[i])
        alpha_s1, sigma_s1 = self._alpha_sigma(self.sigmas[i - 1])
        lambda_t, lambda_s0 = log_snr(alpha_t, sigma_t), log_snr(alpha_s0, sigma_s0)
        lambda_s1 = log_snr(alpha_s1, sigma_s1)
        m0, m1 = cast(np.ndarray, self.model_outputs[-1]), cast(np.ndarray, self.model_outputs[-2])  # second order: both kept
        h, h_0 = lambda_t - lambda_s0, lambda_s0 - lambda_s1
        r0 = h_0 / h
        d0, d1 = m0, (f32(1.0) / r0) * (m0 - m1)
        phi = alpha_t * (exp32(-h) - f32(1.0))
        base = (sigma_t / sigma_s0) * sample - phi * d0
        if self.solver_type == "midpoint":
            return base - (f32(0.5) * phi) * d1
        return base + (alpha_t * ((exp32(-h) - f32(1.0)) / h + f32(1.0))) * d1

    def _use_first_order(self) -> bool:
        """diffusers' rule: first order at the start, and at the end for short runs or a zero final sigma."""
        final = self._step_index == len(self._timesteps_int) - 1 and (
            self.euler_at_final or (self.lower_order_final and len(self._timesteps_int) < 15) or self.final_sigmas_type == "zero"
        )
        return self.solver_order == 1 or self.lower_order_nums < 1 or final

    def step(
        self,
        model_output: np.ndarray,
        timestep: Any,
        sample: np.ndarray,
        noise: np.ndarray | None = None,
    ) -> np.ndarray:
        """One multistep update; `timestep` only places the first call; `noise` is unused (an ODE solver)."""
        if self.num_inference_steps is None:
            raise ValueError("call set_timesteps before step")
        if self._step_index is None:
            self._step_index = first_step_index(self._timesteps_int, float(timestep), len(self._timesteps_int) - 1)
        sample = np.asarray(sample, dtype=F32)
        x0 = self._to_x0(np.asarray(model_output, dtype=F32), sample)
        self.model_outputs = self.model_outputs[1:] + [x0]
        if self._use_first_order():
            prev = self._first_order(x0, sample)
        else:
            prev = self._second_order(sample)
        self.lower_order_nums = min(self.lower_order_nums + 1, self.solver_order)
        self._step_index += 1
        return prev.astype(F32, copy=False)

    def add_noise(self, original: np.ndarray, noise: np.ndarray, timestep: Any) -> np.ndarray:
        """Forward-diffuse `original` to the sigma of `timestep` (one value, or one per batch item)."""
        if self.num_inference_steps is None:
            raise ValueError("call set_timesteps before add_noise")
        ts = np.asarray(timestep, dtype=np.float64).reshape(-1)
        last = len(self._timesteps_int) - 1
        indices = [first_step_index(self._timesteps_int, float(t), last) for t in ts]
        sigma = self.sigmas[indices]
        pairs = [self._alpha_sigma(value) for value in sigma]
        alpha = np.array([a for a, _ in pairs], dtype=F32)
        sigma_t = np.array([t for _, t in pairs], dtype=F32)
        ndim = np.ndim(original)
        original, noise = np.asarray(original, dtype=F32), np.asarray(noise, dtype=F32)
        return (per_sample(alpha, ndim) * original + per_sample(sigma_t, ndim) * noise).astype(F32)
