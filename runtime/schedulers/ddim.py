"""DDIM in numpy, step for step the arithmetic of diffusers' DDIMScheduler (float32 throughout, as diffusers is)."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ._common import (
    F32,
    alphas_cumprod_from,
    check_prediction_type,
    check_spacing,
    f32,
    from_config,
    make_betas,
    per_sample,
    rescale_zero_terminal_snr,
)

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
SPACINGS = ("leading", "trailing", "linspace")
# diffusers DDIM has no other behaviour-changing options; thresholding is refused in __init__.
UNSUPPORTED: dict[str, Any] = {}


def ddim_timesteps(num_train_timesteps: int, num_inference_steps: int, spacing: str, steps_offset: int) -> np.ndarray:
    """DDIMScheduler.set_timesteps' integer timesteps, descending."""
    if spacing == "linspace":
        return np.linspace(0, num_train_timesteps - 1, num_inference_steps).round()[::-1].astype(np.int64)
    if spacing == "leading":
        ratio = num_train_timesteps // num_inference_steps
        return (np.arange(0, num_inference_steps) * ratio).round()[::-1].astype(np.int64) + steps_offset
    if spacing == "trailing":
        stride = num_train_timesteps / num_inference_steps
        return np.round(np.arange(num_train_timesteps, 0, -stride)).astype(np.int64) - 1
    raise ValueError(f"timestep_spacing {spacing!r} is not supported; use one of {', '.join(SPACINGS)}")


class DDIMScheduler:
    """Denoising diffusion implicit models; eta=0 is deterministic, eta>0 adds the DDPM-like noise term."""

    order = 1

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: Any = None,
        clip_sample: bool = True,
        set_alpha_to_one: bool = True,
        steps_offset: int = 0,
        prediction_type: str = "epsilon",
        thresholding: bool = False,
        clip_sample_range: float = 1.0,
        timestep_spacing: str = "leading",
        rescale_betas_zero_snr: bool = False,
        eta: float = 0.0,
        generator: np.random.Generator | None = None,
    ) -> None:
        if thresholding:
            raise ValueError("DDIM: thresholding=True (dynamic thresholding) is not supported; pixel-space models only")
        check_prediction_type(prediction_type, PREDICTION_TYPES)
        check_spacing(timestep_spacing, SPACINGS)
        betas = make_betas(num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas)
        if rescale_betas_zero_snr:
            betas = rescale_zero_terminal_snr(betas)
        self.alphas_cumprod = alphas_cumprod_from(betas)
        self.final_alpha_cumprod = f32(1.0) if set_alpha_to_one else self.alphas_cumprod[0]
        self.num_train_timesteps = num_train_timesteps
        self.prediction_type = prediction_type
        self.clip_sample = clip_sample
        self.clip_sample_range = clip_sample_range
        self.steps_offset = steps_offset
        self.timestep_spacing = timestep_spacing
        self.eta = eta
        self.generator = generator
        self.init_noise_sigma = 1.0
        self.num_inference_steps: int | None = None
        self.timesteps = np.arange(num_train_timesteps)[::-1].astype(F32)

    @classmethod
    def from_config(cls, config: Mapping[str, Any], **overrides: Any) -> "DDIMScheduler":
        """Build from a diffusers scheduler_config.json dict; keys DDIM does not take are ignored."""
        return from_config(cls, UNSUPPORTED, config, **overrides)

    def set_timesteps(self, num_inference_steps: int) -> None:
        """Choose the inference timesteps (float32 copies of diffusers' integer timesteps)."""
        if not 1 <= num_inference_steps <= self.num_train_timesteps:
            raise ValueError(f"num_inference_steps must be in 1..{self.num_train_timesteps}, got {num_inference_steps}")
        self.num_inference_steps = num_inference_steps
        steps = ddim_timesteps(self.num_train_timesteps, num_inference_steps, self.timestep_spacing, self.steps_offset)
        self.timesteps = steps.astype(F32)

    def scale_model_input(self, sample: np.ndarray, timestep: Any = None) -> np.ndarray:
        """DDIM does not scale the denoiser input."""
        return sample

    def _alpha_prev(self, prev_timestep: int) -> np.float32:
        """alphas_cumprod one step on; past t=0 it is final_alpha_cumprod."""
        return self.alphas_cumprod[prev_timestep] if prev_timestep >= 0 else self.final_alpha_cumprod

    def _predict(self, model_output: np.ndarray, sample: np.ndarray, alpha_t: np.float32) -> tuple[np.ndarray, np.ndarray]:
        """(predicted x0, predicted noise) from the model output."""
        beta_t = f32(1.0) - alpha_t
        if self.prediction_type == "epsilon":
            return (sample - np.sqrt(beta_t) * model_output) / np.sqrt(alpha_t), model_output
        if self.prediction_type == "sample":
            return model_output, (sample - np.sqrt(alpha_t) * model_output) / np.sqrt(beta_t)
        x0 = np.sqrt(alpha_t) * sample - np.sqrt(beta_t) * model_output
        return x0, np.sqrt(alpha_t) * model_output + np.sqrt(beta_t) * sample

    def step(
        self,
        model_output: np.ndarray,
        timestep: Any,
        sample: np.ndarray,
        noise: np.ndarray | None = None,
    ) -> np.ndarray:
        """One DDIM update from `timestep` to the previous timestep; returns prev_sample (float32)."""
        if self.num_inference_steps is None:
            raise ValueError("call set_timesteps before step")
        model_output = np.asarray(model_output, dtype=F32)
        sample = np.asarray(sample, dtype=F32)
        t = int(round(float(timestep)))
        # diffusers steps back by N // steps whatever the spacing; reproduce that.
        prev_t = t - self.num_train_timesteps // self.num_inference_steps
        alpha_t, alpha_prev = self.alphas_cumprod[t], self._alpha_prev(prev_t)
        x0, eps = self._predict(model_output, sample, alpha_t)
        if self.clip_sample:
            x0 = np.clip(x0, f32(-self.clip_sample_range), f32(self.clip_sample_range))
        beta_t, beta_prev = f32(1.0) - alpha_t, f32(1.0) - alpha_prev
        variance = (beta_prev / beta_t) * (f32(1.0) - alpha_t / alpha_prev)
        std = f32(self.eta) * np.sqrt(variance)
        prev = np.sqrt(alpha_prev) * x0 + np.sqrt(f32(1.0) - alpha_prev - std * std) * eps
        if self.eta > 0:
            prev = prev + std * self._noise(noise, sample.shape)
        return prev.astype(F32, copy=False)

    def _noise(self, noise: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
        """The eta>0 noise: the caller's array, else a draw from the scheduler's generator."""
        if noise is not None:
            return np.asarray(noise, dtype=F32)
        if self.generator is None:
            self.generator = np.random.default_rng()
        return self.generator.standard_normal(shape, dtype=F32)

    def add_noise(self, original: np.ndarray, noise: np.ndarray, timestep: Any) -> np.ndarray:
        """Forward-diffuse `original` to `timestep` (one value, or one per batch item)."""
        t = np.rint(np.asarray(timestep, dtype=np.float64)).astype(np.int64).reshape(-1)
        alpha = self.alphas_cumprod[t]
        ndim = np.ndim(original)
        scale_x = per_sample(np.sqrt(alpha), ndim)
        scale_noise = per_sample(np.sqrt(F32(1.0) - alpha), ndim)
        return (scale_x * np.asarray(original, dtype=F32) + scale_noise * np.asarray(noise, dtype=F32)).astype(F32)
