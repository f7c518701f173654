"""Noise-schedule tables and config plumbing shared by the numpy samplers.

The tables are built in float32 exactly the way diffusers' torch code builds them,
because every later step multiplies by them: a one-ulp drift in alphas_cumprod
shows up as a 1e-6 drift in the sample.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Callable, Mapping, TypeVar

import numpy as np

F32 = np.float32
T = TypeVar("T")


def f32(x: Any) -> np.float32:
    """A float32 scalar, the dtype every 0-d schedule value has in diffusers."""
    return np.float32(x)


def log32(x: np.float32) -> np.float32:
    """float32 log rounded from float64: torch's scalar log is correctly rounded, numpy's float32 log is not."""
    with np.errstate(divide="ignore"):  # log(0) = -inf is the final-step case, as in diffusers
        return np.float32(np.log(np.float64(x)))


def exp32(x: np.float32) -> np.float32:
    """float32 exp rounded from float64, for the same reason as log32."""
    return np.float32(np.exp(np.float64(x)))


def linspace32(start: float, end: float, steps: int) -> np.ndarray:
    """torch.linspace(start, end, steps, dtype=float32) bit for bit (float32 step, fused start + step * i)."""
    start32, end32 = f32(start), f32(end)
    if steps == 1:
        return np.array([start32], dtype=F32)
    step = np.float64(f32((end32 - start32) / f32(steps - 1)))
    idx = np.arange(steps)
    # torch fills the first half forward from start and the second half backward from end.
    forward = np.float64(start32) + step * idx
    backward = np.float64(end32) - step * (steps - 1 - idx)
    return np.where(idx < steps // 2, forward, backward).astype(F32)


def _cosine_betas(num_train_timesteps: int, max_beta: float = 0.999) -> np.ndarray:
    """The squaredcos_cap_v2 schedule (betas_for_alpha_bar with the cosine alpha_bar)."""

    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = [min(1 - alpha_bar((i + 1) / num_train_timesteps) / alpha_bar(i / num_train_timesteps), max_beta) for i in range(num_train_timesteps)]
    return np.array(betas, dtype=F32)


def make_betas(
    num_train_timesteps: int,
    beta_start: float,
    beta_end: float,
    beta_schedule: str,
    trained_betas: Any = None,
) -> np.ndarray:
    """The float32 beta table for a diffusers beta_schedule name (or explicit trained_betas)."""
    if trained_betas is not None:
        return np.asarray(trained_betas, dtype=F32)
    if beta_schedule == "linear":
        return linspace32(beta_start, beta_end, num_train_timesteps)
    if beta_schedule == "scaled_linear":
        root = linspace32(beta_start**0.5, beta_end**0.5, num_train_timesteps)
        return root * root
    if beta_schedule == "squaredcos_cap_v2":
        return _cosine_betas(num_train_timesteps)
    raise ValueError(f"beta_schedule {beta_schedule!r} is not supported; use linear, scaled_linear or squaredcos_cap_v2")


def cumprod32(alphas: np.ndarray) -> np.ndarray:
    """torch.cumprod on a float32 CPU tensor: the running product is kept in float64."""
    return np.cumprod(alphas.astype(np.float64)).astype(F32)


def rescale_zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
    """Rescale betas to zero terminal SNR (arXiv 2305.08891, Algorithm 1), in float32 like diffusers."""
    alphas_bar_sqrt = np.sqrt(cumprod32(F32(1.0) - betas))
    first, last = alphas_bar_sqrt[0].copy(), alphas_bar_sqrt[-1].copy()
    alphas_bar_sqrt = alphas_bar_sqrt - last
    alphas_bar_sqrt = alphas_bar_sqrt * (first / (first - last))
    alphas_bar = alphas_bar_sqrt * alphas_bar_sqrt
    alphas = np.concatenate([alphas_bar[:1], alphas_bar[1:] / alphas_bar[:-1]])
    return F32(1.0) - alphas


def alphas_cumprod_from(betas: np.ndarray) -> np.ndarray:
    """The float32 cumulative product of (1 - beta)."""
    return cumprod32(F32(1.0) - betas)


def solver_alphas_cumprod(
    num_train_timesteps: int, beta_start: float, beta_end: float, beta_schedule: str, trained_betas: Any, rescale_betas_zero_snr: bool
) -> np.ndarray:
    """The multistep solvers' (DPM-Solver, UniPC) alphas_cumprod: zero-SNR rescaled with its last value kept finite."""
    betas = make_betas(num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas)
    if rescale_betas_zero_snr:
        betas = rescale_zero_terminal_snr(betas)
    alphas_cumprod = alphas_cumprod_from(betas)
    if rescale_betas_zero_snr:
        alphas_cumprod[-1] = 2**-24  # keeps the last sigma finite, as diffusers does
    return alphas_cumprod


def per_sample(values: np.ndarray | np.floating[Any], ndim: int) -> np.ndarray:
    """Shape a per-batch-item vector (or one value) to broadcast over a sample of ndim dimensions."""
    return values.reshape(-1, *([1] * (ndim - 1)))


def check_spacing(spacing: str, allowed: tuple[str, ...]) -> None:
    """Reject a timestep_spacing this sampler does not know."""
    if spacing not in allowed:
        raise ValueError(f"timestep_spacing {spacing!r} is not supported; use one of {', '.join(allowed)}")


def check_prediction_type(prediction_type: str, allowed: tuple[str, ...]) -> None:
    """Reject a prediction type this sampler cannot convert."""
    if prediction_type not in allowed:
        raise ValueError(f"prediction_type {prediction_type!r} is not supported here; use one of {', '.join(allowed)}")


def reject_unsupported(options: Mapping[str, Any], defaults: Mapping[str, Any], sampler: str) -> None:
    """Raise if a config turns on a diffusers feature this sampler leaves out (ignoring it would change the output)."""
    for key, default in defaults.items():
        value = options.get(key, default)
        # None, False and 0 all mean "off" in diffusers configs.
        if value != default and (value or default):
            raise ValueError(f"{sampler}: {key}={value!r} is not supported (only {default!r})")


def from_config(cls: Callable[..., T], unsupported: Mapping[str, Any], config: Mapping[str, Any], **overrides: Any) -> T:
    """Build cls from a scheduler_config.json dict like diffusers' from_config: unknown keys are dropped."""
    merged = {**config, **overrides}
    reject_unsupported(merged, unsupported, getattr(cls, "__name__", str(cls)))
    params = inspect.signature(cls).parameters
    return cls(**{key: value for key, value in merged.items() if key in params})


def first_step_index(schedule: np.ndarray, timestep: float | np.floating[Any], missing: int | None) -> int:
    """Where the first step() call sits in the schedule: the first match, else `missing`.

    diffusers takes the second match when the value repeats (an img2img convention), which
    for a schedule that starts with a repeated value (cosine betas + Karras sigmas) skips a
    step and then runs off the end; the denoising loop here always starts at the first match.
    """
    matches = np.flatnonzero(schedule == timestep)
    if len(matches) == 0:
        if missing is None:
            raise ValueError(f"timestep {timestep} is not in this scheduler's timesteps")
        return missing
    return int(matches[0])
