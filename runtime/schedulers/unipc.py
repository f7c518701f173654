"""UniPC multistep in numpy, reproducing diffusers' UniPCMultistepScheduler (data prediction, B(h) variants).

UniPC (arXiv 2302.04867) predicts with UniP-p and corrects the previous step with UniC-p using the
model output the predictor's step produced, so each step costs one model call. Two noise parametrisations:
- flow sigmas (the Wan family: `use_flow_sigmas`, `flow_shift`, `prediction_type="flow_prediction"`):
  x_sigma = (1 - sigma) * x0 + sigma * noise, and the model predicts the velocity noise - x0;
- the VP schedule of the betas (epsilon, v_prediction or sample models such as the UNet3D family).
Scalars are float32 and combined in diffusers' operation order, so the result matches to float32 rounding.
"""

from __future__ import annotations

from typing import Any, Mapping, cast

import numpy as np

from ._common import (
    F32,
    check_prediction_type,
    check_spacing,
    f32,
    first_step_index,
    from_config,
    log32,
    per_sample,
    solver_alphas_cumprod,
)
from .dpm_solver import dpm_timesteps
from .flow_match import shift_sigmas

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample", "flow_prediction")
SPACINGS = ("linspace", "leading", "trailing")
SOLVER_TYPES = ("bh1", "bh2")
# diffusers keeps the first flow sigma this far below 1, so log(1 - sigma) stays finite.
FLOW_SIGMA_EPS = 1e-6
# Options diffusers has and this port leaves out: each must keep its default.
UNSUPPORTED: dict[str, Any] = {
    "predict_x0": True,
    "thresholding": False,
    "solver_p": None,
    "use_karras_sigmas": False,
    "use_exponential_sigmas": False,
    "use_beta_sigmas": False,
    "use_dynamic_shifting": False,
    "shift_terminal": None,
}


def expm1_32(x: np.float32) -> np.float32:
    """float32 expm1 rounded from float64 (torch's scalar expm1 is correctly rounded)."""
    return np.float32(np.expm1(np.float64(x)))


def flow_sigmas(num_train_timesteps: int, num_inference_steps: int, shift: float) -> np.ndarray:
    """diffusers' flow sigmas in float64: linspace(1, 1/N) without its end, shifted, the first kept below 1."""
    sigmas = np.linspace(1, 1 / num_train_timesteps, num_inference_steps + 1)[:-1]
    sigmas = shift_sigmas(sigmas, shift)
    if np.fabs(sigmas[0] - 1) < FLOW_SIGMA_EPS:
        sigmas[0] -= FLOW_SIGMA_EPS
    return sigmas


def b_coefficients(hh: np.float32, order: int, solver_type: str) -> tuple[np.ndarray, np.float32, np.float32]:
    """(b_1..b_order, h*phi_1(h), B(h)): the right-hand side of UniPC's order conditions for step hh."""
    h_phi_1 = expm1_32(hh)
    with np.errstate(divide="ignore", invalid="ignore"):
        h_phi_k = h_phi_1 / hh - f32(1.0)
        b_h = hh if solver_type == "bh1" else h_phi_1
        b, factorial = [], 1
        for i in range(1, order + 1):
            b.append(h_phi_k * f32(factorial) / b_h)
            factorial *= i + 1
            h_phi_k = h_phi_k / hh - f32(1 / factorial)
    return np.array(b, dtype=F32), h_phi_1, b_h


def solve32(r: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The float32 solution of r @ x = b (torch.linalg.solve on float32 tensors)."""
    return np.linalg.solve(r.astype(F32), b.astype(F32)).astype(F32)


class UniPCMultistepScheduler:
    """UniPC-p predictor with the UniC corrector (orders 1-3), data prediction, bh1 or bh2."""

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
        solver_type: str = "bh2",
        lower_order_final: bool = True,
        disable_corrector: Any = (),
        use_flow_sigmas: bool = False,
        flow_shift: float = 1.0,
        timestep_spacing: str = "linspace",
        steps_offset: int = 0,
        final_sigmas_type: str = "zero",
        rescale_betas_zero_snr: bool = False,
    ) -> None:
        check_prediction_type(prediction_type, PREDICTION_TYPES)
        if (prediction_type == "flow_prediction") != bool(use_flow_sigmas):
            raise ValueError("UniPC: prediction_type 'flow_prediction' goes with use_flow_sigmas=True, and only with it")
        if solver_order not in (1, 2, 3):
            raise ValueError(f"UniPC: solver_order={solver_order} is not supported (1, 2 or 3)")
        if solver_type not in SOLVER_TYPES:
            raise ValueError(f"UniPC: solver_type {solver_type!r} is not supported; use bh1 or bh2")
        if final_sigmas_type not in ("zero", "sigma_min"):
            raise ValueError(f"final_sigmas_type {final_sigmas_type!r} is not supported; use zero or sigma_min")
        check_spacing(timestep_spacing, SPACINGS)
        alphas_cumprod = solver_alphas_cumprod(num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas, rescale_betas_zero_snr)
        self.train_sigmas = np.sqrt((F32(1.0) - alphas_cumprod) / alphas_cumprod)
        self.num_train_timesteps = num_train_timesteps
        self.solver_order = solver_order
        self.prediction_type = prediction_type
        self.solver_type = solver_type
        self.lower_order_final = lower_order_final
        self.disable_corrector = {int(i) for i in disable_corrector}
        self.use_flow_sigmas = bool(use_flow_sigmas)
        self.flow_shift = float(flow_shift)
        self.timestep_spacing = timestep_spacing
        self.steps_offset = steps_offset
        self.final_sigmas_type = final_sigmas_type
        self.init_noise_sigma = 1.0
        self.num_inference_steps: int | None = None
        self.sigmas = self.train_sigmas
        self._timesteps_int = np.arange(num_train_timesteps)[::-1].copy()
        self.timesteps = self._timesteps_int.astype(F32)
        self._reset()

    @classmethod
    def from_config(cls, config: Mapping[str, Any], **overrides: Any) -> "UniPCMultistepScheduler":
        """Build from a diffusers scheduler_config.json dict; keys this port does not take are ignored."""
        return from_config(cls, UNSUPPORTED, config, **overrides)

    def _reset(self) -> None:
        """Forget the multistep history."""
        self.model_outputs: list[np.ndarray | None] = [None] * self.solver_order
        self.lower_order_nums = 0
        self.this_order = 0
        self.last_sample: np.ndarray | None = None
        self._step_index: int | None = None  # placed by the first step(), as in diffusers

    def set_timesteps(self, num_inference_steps: int) -> None:
        """Choose timesteps and sigmas (a trailing final sigma) and reset the solver history."""
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
        if self.use_flow_sigmas:
            sigmas = flow_sigmas(self.num_train_timesteps, num_inference_steps, self.flow_shift)
            ts = sigmas * self.num_train_timesteps
            last = sigmas[-1] if self.final_sigmas_type == "sigma_min" else 0.0
        else:
            ts = dpm_timesteps(self.num_train_timesteps, num_inference_steps, self.timestep_spacing, self.steps_offset, self.num_train_timesteps)
            sigmas = np.interp(ts, np.arange(0, len(self.train_sigmas)), self.train_sigmas)
            last = self.train_sigmas[0] if self.final_sigmas_type == "sigma_min" else 0.0
        self.sigmas = np.concatenate([sigmas, [last]]).astype(F32)
        self._timesteps_int = np.asarray(ts).astype(np.int64)  # flow timesteps are truncated, as in diffusers
        self.timesteps = self._timesteps_int.astype(F32)
        self.num_inference_steps = len(self._timesteps_int)
        self._reset()

    def scale_model_input(self, sample: np.ndarray, timestep: Any = None) -> np.ndarray:
        """UniPC does not scale the denoiser input."""
        return sample

    def _alpha_sigma(self, sigma: np.float32) -> tuple[np.float32, np.float32]:
        """(alpha_t, sigma_t) of a schedule sigma: 1 - sigma and sigma for flow, the VP pair otherwise."""
        sigma = f32(sigma)
        if self.use_flow_sigmas:
            return f32(1.0) - sigma, sigma
        alpha = f32(1.0) / np.sqrt(sigma * sigma + f32(1.0))
        return alpha, sigma * alpha

    def _lambda(self, index: int) -> np.float32:
        """log(alpha_t) - log(sigma_t) at sigmas[index] (+inf at a zero final sigma)."""
        alpha, sigma = self._alpha_sigma(self.sigmas[index])
        return log32(alpha) - log32(sigma)

    def _to_x0(self, model_output: np.ndarray, sample: np.ndarray) -> np.ndarray:
        """The data prediction x0 that UniPC extrapolates."""
        sigma = self.sigmas[self._step_index]
        alpha_t, sigma_t = self._alpha_sigma(sigma)
        if self.prediction_type == "flow_prediction":
            return sample - sigma * model_output
        if self.prediction_type == "epsilon":
            return (sample - sigma_t * model_output) / alpha_t
        if self.prediction_type == "sample":
            return model_output
        return alpha_t * sample - sigma_t * model_output

    def _differences(self, base: int, order: int, lambda_s0: np.float32, h: np.float32) -> tuple[list[np.float32], list[np.ndarray]]:
        """rks and D1s of the earlier outputs: (lambda_si - lambda_s0) / h and (m_i - m0) / r_i, for i < order."""
        outputs = cast("list[np.ndarray]", self.model_outputs)  # the last `order` are kept by now
        m0 = outputs[-1]
        rks, d1s = [], []
        with np.errstate(divide="ignore", invalid="ignore"):  # h = 0 or inf at a final sigma, as in diffusers
            for i in range(1, order):
                rk = (self._lambda(base - i) - lambda_s0) / h
                rks.append(rk)
                d1s.append((outputs[-(i + 1)] - m0) / rk)
        return rks, d1s

    def _update(self, x: np.ndarray, target: int, base: int, order: int, model_t: np.ndarray | None) -> np.ndarray:
        """UniP (model_t None) or UniC (model_t = the model output at target) from sigmas[base] to sigmas[target]."""
        alpha_t, sigma_t = self._alpha_sigma(self.sigmas[target])
        _, sigma_s0 = self._alpha_sigma(self.sigmas[base])
        lambda_s0 = self._lambda(base)
        with np.errstate(divide="ignore", invalid="ignore"):
            h = self._lambda(target) - lambda_s0
        rks, d1s = self._differences(base, order, lambda_s0, h)
        rks.append(f32(1.0))
        rks_arr = np.array(rks, dtype=F32)
        b, h_phi_1, b_h = b_coefficients(-h, order, self.solver_type)
        r = np.stack([rks_arr ** F32(i - 1) for i in range(1, order + 1)])
        m0 = cast(np.ndarray, self.model_outputs[-1])
        base_x = (sigma_t / sigma_s0) * x - (alpha_t * h_phi_1) * m0
        if model_t is None:  # predictor
            if not d1s:
                return base_x  # diffusers subtracts alpha_t * B(h) * 0 here; the term is 0
            rhos = np.full(1, 0.5, dtype=F32) if order == 2 else solve32(r[:-1, :-1], b[:-1])
            return base_x - (alpha_t * b_h) * self._combine(rhos, d1s)
        rhos = np.full(1, 0.5, dtype=F32) if order == 1 else solve32(r, b)
        correction = rhos[-1] * (model_t - m0)
        if d1s:
            correction = self._combine(rhos[:-1], d1s) + correction
        return base_x - (alpha_t * b_h) * correction

    @staticmethod
    def _combine(rhos: np.ndarray, d1s: list[np.ndarray]) -> np.ndarray:
        """sum_k rhos[k] * d1s[k] (diffusers' einsum over the stacked differences)."""
        total = rhos[0] * d1s[0]
        for rho, d1 in zip(rhos[1:], d1s[1:]):
            total = total + rho * d1
        return total

    def step(
        self,
        model_output: np.ndarray,
        timestep: Any,
        sample: np.ndarray,
        noise: np.ndarray | None = None,
    ) -> np.ndarray:
        """Correct the last step with this output (UniC), then predict the next sample (UniP); `noise` is unused."""
        if self.num_inference_steps is None:
            raise ValueError("call set_timesteps before step")
        if self._step_index is None:
            self._step_index = first_step_index(self._timesteps_int, float(timestep), len(self._timesteps_int) - 1)
        i = self._step_index
        sample = np.asarray(sample, dtype=F32)
        x0 = self._to_x0(np.asarray(model_output, dtype=F32), sample)
        if i > 0 and (i - 1) not in self.disable_corrector and self.last_sample is not None:
            sample = self._update(self.last_sample, i, i - 1, self.this_order, x0).astype(F32, copy=False)
        self.model_outputs = self.model_outputs[1:] + [x0]
        order = min(self.solver_order, len(self._timesteps_int) - i) if self.lower_order_final else self.solver_order
        self.this_order = min(order, self.lower_order_nums + 1)  # warm-up: the history is still short
        self.last_sample = sample
        prev = self._update(sample, i + 1, i, self.this_order, None)
        self.lower_order_nums = min(self.lower_order_nums + 1, self.solver_order)
        self._step_index += 1
        return prev.astype(F32, copy=False)

    def add_noise(self, original: np.ndarray, noise: np.ndarray, timestep: Any) -> np.ndarray:
        """Forward-diffuse `original` to the sigma of `timestep` (one value, or one per batch item)."""
        if self.num_inference_steps is None:
            raise ValueError("call set_timesteps before add_noise")
        ts = np.asarray(timestep, dtype=np.float64).reshape(-1)
        last = len(self._timesteps_int) - 1
        sigma = self.sigmas[[first_step_index(self._timesteps_int, float(t), last) for t in ts]]
        pairs = [self._alpha_sigma(s) for s in sigma]
        alpha = np.array([a for a, _ in pairs], dtype=F32)
        sigma_t = np.array([s for _, s in pairs], dtype=F32)
        ndim = np.ndim(original)
        original, noise = np.asarray(original, dtype=F32), np.asarray(noise, dtype=F32)
        return (per_sample(alpha, ndim) * original + per_sample(sigma_t, ndim) * noise).astype(F32)
