"""Capture the denoiser's real inputs by running the runtime's own FP32 sampler loop over prompts."""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from t2vtrt.runtime.backends import Feeds
from t2vtrt.runtime.errors import T2VError
from t2vtrt.runtime.files import atomic_path
from t2vtrt.runtime.manifest import Manifest
from t2vtrt.runtime.pipeline import Pipeline

META_KEY = "__meta__"


def timestep_of(feeds: Feeds) -> float:
    """The timestep of one denoiser call (both CFG branches share it)."""
    return float(np.asarray(feeds["timestep"]).reshape(-1)[0])


@dataclass
class Capture:
    """Denoiser calls (each one holds both CFG branches) and how they were made."""

    feeds: list[Feeds]
    meta: dict[str, Any] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        """One .npz: per input a stacked (samples, batch, ...) array, plus the meta as JSON; atomic."""
        if not self.feeds:
            raise T2VError(f"refusing to write {path}: the capture holds no samples")
        arrays = {name: np.stack([f[name] for f in self.feeds]) for name in self.feeds[0]}
        arrays[META_KEY] = np.array(json.dumps(self.meta, sort_keys=True))
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, **arrays)

    @classmethod
    def load(cls, path: Path) -> "Capture":
        """Read a capture; one-line errors for a missing, unreadable or empty file."""
        if not path.is_file():
            raise T2VError(f"calibration data {path} is missing: run `t2vtrt calibrate` (or `make engines`) first")
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise T2VError(f"calibration data {path} is not a readable .npz ({exc}); delete it and run `t2vtrt calibrate`") from exc
        meta = json.loads(str(arrays.pop(META_KEY))) if META_KEY in arrays else {}
        counts = {len(a) for a in arrays.values()}
        if not arrays or counts == {0}:
            raise T2VError(f"calibration data {path} holds no samples; delete it and run `t2vtrt calibrate`")
        if len(counts) != 1:
            raise T2VError(f"calibration data {path} is inconsistent: its inputs hold different sample counts {sorted(counts)}")
        count = counts.pop()
        return cls([{k: a[i] for k, a in arrays.items()} for i in range(count)], meta)

    def spread(self, k: int) -> list[Feeds]:
        """k of the calls, evenly spread over their timesteps (noisiest to cleanest), for a cheaper measurement."""
        order = sorted(range(len(self.feeds)), key=lambda i: -timestep_of(self.feeds[i]))
        return [self.feeds[order[i]] for i in evenly(len(order), k)]


class Recorder:
    """A Pipeline.recording hook: copies the feeds of the kept denoiser calls (counted from 0)."""

    def __init__(self, keep: set[int]) -> None:
        self.keep = keep
        self.calls = 0
        self.kept: list[Feeds] = []
        self.kept_timesteps: list[float] = []

    def __call__(self, component: str, feeds: Feeds) -> None:
        """One engine call; a denoiser call whose index is kept is copied."""
        if component != "denoiser":
            return
        if self.calls in self.keep:
            self.kept.append({k: np.array(v, copy=True) for k, v in feeds.items()})
            self.kept_timesteps.append(timestep_of(feeds))
        self.calls += 1


SELECTION_VERSION = 2  # 1 kept the first `samples` steps when samples < steps (no low-noise timesteps)


def evenly(count: int, k: int) -> list[int]:
    """k of range(count), evenly spaced with both ends included (all of them when k >= count)."""
    if k >= count:
        return list(range(count))
    return [int(i) for i in np.round(np.linspace(0, count - 1, k))] if k > 0 else []


def select_steps(prompts: int, steps: int, samples: int) -> list[set[int]]:
    """Per prompt, the step indices to keep: `samples` calls spread evenly over timesteps and prompts."""
    if samples >= prompts * steps:
        return [set(range(steps)) for _ in range(prompts)]
    keep: list[set[int]] = [set() for _ in range(prompts)]
    if samples < steps:  # fewer calls than steps: one each at evenly spaced steps, first and last included
        per_step = np.bincount(evenly(steps, samples), minlength=steps).tolist()
    else:
        per_step = [len(chunk) for chunk in np.array_split(np.arange(samples), steps)]
    for step, count in enumerate(per_step):
        # Evenly spaced prompts, rotated by the step so each prompt contributes different timesteps.
        chosen = (np.linspace(0, prompts, count, endpoint=False).astype(int) + step) % prompts
        for prompt in chosen:
            keep[int(prompt)].add(step)
    return keep


def generation_settings(manifest: Manifest) -> dict[str, Any]:
    """The manifest's defaults the capture runs with (steps, guidance, size, sampler)."""
    d = manifest.data["defaults"]
    sampler = manifest.data["scheduler"]["default_sampler"]
    return {
        "steps": int(d["steps"]),
        "guidance": float(d["guidance"]),
        "frames": int(d["frames"]),
        "height": int(d["height"]),
        "width": int(d["width"]),
        "sampler": sampler,
    }


def capture(pipe: Pipeline, prompts: list[str], samples: int, seed: int, on_step: Callable[[int, int], None] | None = None) -> Capture:
    """Run every prompt through the FP32 loop (seed + its index) and keep `samples` denoiser calls.

    on_step(done, total) counts sampler steps over all prompts (a real-size step takes most of a minute).
    """
    if not prompts or samples < 1:
        raise T2VError("calibration needs at least one prompt and one sample")
    settings = generation_settings(pipe.manifest)
    keep = select_steps(len(prompts), settings["steps"], samples)
    if on_step:
        on_step(0, len(prompts) * settings["steps"])
    feeds: list[Feeds] = []
    timesteps: list[float] = []
    for index, prompt in enumerate(prompts):
        recorder = Recorder(keep[index])
        with pipe.recording(recorder):
            context = pipe.encode([prompt], [""], settings["guidance"] > 1.0)
            pipe.denoise(
                context,
                settings["steps"],
                settings["guidance"],
                settings["frames"],
                settings["height"],
                settings["width"],
                seed + index,
                settings["sampler"],
                None,
                None if on_step is None else lambda step, steps, before=index * settings["steps"]: on_step(before + step, len(prompts) * steps),
            )
        feeds += recorder.kept
        timesteps += recorder.kept_timesteps
    return Capture(feeds, {**settings, "seed": seed, "prompts": len(prompts), "samples": len(feeds), "timesteps": timesteps})
