"""One generation request, resolved against the manifest and checked before any engine runs.

Only `None` means "the manifest's default": 0, "" or NaN are mistakes, refused with one line each.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from t2vtrt.runtime.errors import T2VError
from t2vtrt.runtime.manifest import Manifest
from t2vtrt.runtime.schedulers import SAMPLERS, make_scheduler


@dataclass(frozen=True)
class Request:
    """Concrete, checked values of one call."""

    prompts: list[str]
    negatives: list[str]
    steps: int
    guidance: float
    frames: int
    height: int
    width: int
    seed: int
    sampler: str


def resolve_request(
    manifest: Manifest,
    prompts: list[str],
    negatives: list[str],
    steps: int | None,
    guidance: float | None,
    frames: int | None,
    height: int | None,
    width: int | None,
    seed: int,
    sampler: str | None,
) -> Request:
    """Fill defaults where a value is None, then refuse anything the engines or the sampler cannot take."""
    d = manifest.data["defaults"]
    check_prompts(prompts, "prompt")
    check_prompts(negatives, "negative prompt", allow_empty=True)
    request = Request(
        prompts=prompts,
        negatives=negatives,
        steps=_integer("steps", d["steps"] if steps is None else steps),
        guidance=_guidance(d["guidance"] if guidance is None else guidance),
        frames=_integer("frames", d["frames"] if frames is None else frames),
        height=_integer("height", d["height"] if height is None else height),
        width=_integer("width", d["width"] if width is None else width),
        seed=_seed(seed),
        sampler=check_sampler(manifest, manifest.data["scheduler"]["default_sampler"] if sampler is None else sampler),
    )
    check_sizes(manifest, len(prompts), request.frames, request.height, request.width)
    check_steps(manifest, request.sampler, request.steps)
    return request


def check_prompts(prompts: list[str], what: str, allow_empty: bool = False) -> None:
    """Strings, non-empty (prompts), encodable as UTF-8 (a terminal in another locale passes undecodable bytes)."""
    if not prompts and not allow_empty:
        raise T2VError(f'the {what} is empty: pass a text such as "a red balloon rising over a lake"')
    for index, text in enumerate(prompts):
        if not isinstance(text, str):
            raise T2VError(f"{what} {index} is {type(text).__name__}, not a string")
        if not allow_empty and not text.strip():
            raise T2VError(f'the {what} is empty: pass a text such as "a red balloon rising over a lake"')
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise T2VError(
                f"the {what} is not valid UTF-8 (undecodable byte at character {exc.start}): pass the text in "
                "UTF-8 (check the terminal's or file's encoding)"
            ) from None


def _integer(name: str, value: Any) -> int:
    """An int (not a bool, not a float with a fraction)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float) and not value.is_integer()):
        raise T2VError(f"{name} must be a whole number, got {value!r}")
    return int(value)


def _guidance(value: Any) -> float:
    """A finite guidance scale; <= 1 turns guidance off (documented), NaN/inf are mistakes."""
    try:
        scale = float(value)
    except (TypeError, ValueError):
        raise T2VError(f"guidance must be a number such as 7.5, got {value!r}") from None
    if not math.isfinite(scale):
        raise T2VError(f"guidance={value} is not a finite number: pass a scale such as 7.5 (<= 1 turns guidance off)")
    return scale


def _seed(value: Any) -> int:
    """A non-negative integer seed (numpy's default_rng refuses negative ones)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise T2VError(f"seed must be a whole number >= 0, got {value!r}")
    return value


def check_sampler(manifest: Manifest, name: str) -> str:
    """A sampler this model offers (its manifest's list), not merely one the runtime knows."""
    offered = list(manifest.data["scheduler"]["samplers"])
    if name not in SAMPLERS:
        raise T2VError(f"unknown sampler {name!r}; choose one of: {', '.join(offered)}")
    if name not in offered:
        prediction = manifest.data["scheduler"]["prediction_type"]
        raise T2VError(f"sampler {name!r} does not fit this model ({prediction} prediction); choose one of: {', '.join(offered)}")
    return name


def size_multiple(manifest: Manifest) -> int:
    """The pixel multiple height and width need: the family's (VAE x denoiser downsampling), else the VAE's."""
    latent = manifest.data["latent"]
    return int(latent.get("size_multiple", latent["spatial_factor"]))


def check_sizes(manifest: Manifest, batch: int, frames: int, height: int, width: int) -> None:
    """Batch, frames and sizes inside the built ranges; height and width multiples of what the graphs need."""
    ranges = manifest.data["ranges"]
    for name, value in (("batch", batch), ("frames", frames), ("height", height), ("width", width)):
        lo, _, hi = ranges[name]
        if not lo <= value <= hi:
            raise T2VError(f"{name}={value} is outside the range these engines were built for [{lo}, {hi}] ({manifest.root})")
    check_stream_frames(manifest, frames)
    multiple = size_multiple(manifest)
    if height % multiple or width % multiple:
        raise T2VError(
            f"width and height must be multiples of {multiple} (the model's downsampling), got {width}x{height} "
            f"(WxH); e.g. {_round_to(width, multiple)}x{_round_to(height, multiple)}"
        )


def stream_frame_counts(factor: int, per_call: int, up_to: int) -> list[int]:
    """Every pixel frame count a streaming decoder can return, up to `up_to`: 1 + factor * (latent frames - 1),
    latent frames a multiple of the frames each call decodes."""
    counts, latent = [], per_call
    while 1 + factor * (latent - 1) <= up_to:
        counts.append(1 + factor * (latent - 1))
        latent += per_call
    return counts


def check_stream_frames(manifest: Manifest, frames: int) -> None:
    """A streaming decoder turns k latent frames into 1 + temporal_factor * (k - 1) frames: refuse other counts."""
    latent = manifest.data["latent"]
    if latent["vae_decode"] != "streaming":
        return
    factor, per_call = latent["temporal_factor"], latent["stream"]["latent_frames_per_call"]
    counts = stream_frame_counts(factor, per_call, frames + factor * per_call)
    if frames in counts:
        return
    lo, hi = manifest.data["ranges"]["frames"][0], manifest.data["ranges"]["frames"][2]
    near = [c for c in counts if lo <= c <= hi and abs(c - frames) < factor * per_call] or counts[-1:]
    raise T2VError(
        f"frames={frames} does not fit this model's streaming VAE, which decodes 1 + {factor}*k frames"
        f"{f' (k a multiple of {per_call})' if per_call > 1 else ''}: use {' or '.join(str(c) for c in near)}"
    )


def _round_to(value: int, multiple: int) -> int:
    """The nearest positive multiple."""
    return max(multiple, round(value / multiple) * multiple)


def check_steps(manifest: Manifest, sampler: str, steps: int) -> None:
    """1 <= steps <= the most this sampler can place on the model's training timesteps."""
    if steps < 1:
        raise T2VError(f"steps must be >= 1, got {steps}")
    if not _steps_fit(manifest, sampler, steps):
        raise T2VError(
            f"steps={steps} is more than sampler {sampler!r} can place on this model's timesteps: use at most {_max_steps(manifest, sampler, steps)}"
        )


def _steps_fit(manifest: Manifest, sampler: str, steps: int) -> bool:
    """Whether the sampler's timesteps for `steps` are distinct and inside the denoiser's trained range."""
    info = manifest.data["scheduler"]
    train = int(info["config"].get("num_train_timesteps", 1000))
    try:
        scheduler = make_scheduler(sampler, info["config"], info["prediction_type"])
        scheduler.set_timesteps(steps)
    except (ValueError, IndexError, ZeroDivisionError, OverflowError):
        return False
    timesteps = np.asarray(scheduler.timesteps, dtype=np.float64)
    # A flow model's timestep is sigma * num_train_timesteps, and its first sigma may be 1 exactly (flow-euler).
    top = train if info["prediction_type"] == "flow" else train - 1
    if timesteps.size == 0 or timesteps.min() < 0 or timesteps.max() > top:
        return False
    sigmas = getattr(scheduler, "sigmas", None)
    if sigmas is not None:  # multistep solvers divide by sigma differences: a repeated sigma is a 0/0
        return bool(np.all(np.diff(np.asarray(sigmas, dtype=np.float64)) != 0))
    return len(np.unique(timesteps)) == timesteps.size


def _max_steps(manifest: Manifest, sampler: str, upper: int) -> int:
    """The largest step count below `upper` that fits (binary search; fitting is monotone in practice)."""
    lo, hi = 1, upper
    while lo + 1 < hi:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if _steps_fit(manifest, sampler, mid) else (lo, mid)
    return lo
