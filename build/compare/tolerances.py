"""Accuracy thresholds as data: tolerances.toml, looked up per component and precision."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from t2vtrt.runtime.errors import T2VError

DEFAULT_PATH = Path(__file__).with_name("tolerances.toml")
# Which way each metric must go to pass: a "max" metric fails above its threshold, a "min" one below.
GRAPH_METRICS = {"rel_l2": "max", "max_abs": "max", "cosine": "min", "psnr": "min"}
VIDEO_METRICS = {"psnr_min": "min", "psnr_mean": "min", "ssim_min": "min", "ssim_mean": "min"}


def load_tolerances(path: str | Path | None = None) -> dict[str, Any]:
    """Read a tolerances file (default: the one shipped beside this module) and check its shape."""
    path = Path(path) if path else DEFAULT_PATH
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise T2VError(f"cannot read tolerances file {path}: {exc}") from exc
    for section in ("graph", "video", "golden", "regression"):
        if section not in data:
            raise T2VError(f"tolerances file {path} has no [{section}] table")
    return data


def graph_thresholds(tolerances: dict[str, Any], component: str, precision: str, stage: str | None = None) -> dict[str, float] | None:
    """Thresholds of one graph variant, else of its stage (manifest.stages); None when the file sets neither."""
    # A stage's table covers every component of it (a streaming decoder's next graph, a second denoiser expert),
    # so the file needs no family's component names; a component's own table still wins.
    entry = tolerances["graph"].get(component, {}).get(precision) or tolerances["graph"].get(stage or component, {}).get(precision)
    return {k: float(v) for k, v in entry.items() if k in GRAPH_METRICS} if entry else None


def video_thresholds(tolerances: dict[str, Any], precision: str) -> dict[str, float] | None:
    """Thresholds of the end-to-end video at one precision; None when the file sets none."""
    entry = tolerances["video"].get(precision)
    return {k: float(v) for k, v in entry.items() if k in VIDEO_METRICS} if entry else None


def expected_precisions(tolerances: dict[str, Any], component: str, stage: str) -> list[str]:
    """The precisions the file has graph thresholds for, for this component or its stage: what a complete target ships."""
    listed = [*tolerances["graph"].get(component, {}), *tolerances["graph"].get(stage, {})]
    return list(dict.fromkeys(listed))


def diffusers_thresholds(tolerances: dict[str, Any], precision: str) -> dict[str, float] | None:
    """[diffusers.<precision>]: a precision's video vs the family's diffusers pipeline; None when the file sets none."""
    entry = tolerances.get("diffusers", {}).get(precision)
    return {k: float(v) for k, v in entry.items() if k in VIDEO_METRICS} if entry else None


def adherence_max_drop(tolerances: dict[str, Any]) -> float:
    """[adherence].max_drop: how far a precision's color / motion accuracy may fall below FP32's."""
    try:
        return float(tolerances["adherence"]["max_drop"])
    except KeyError as exc:
        raise T2VError("the eval set asks for prompt adherence but the tolerances file has no [adherence] max_drop") from exc
