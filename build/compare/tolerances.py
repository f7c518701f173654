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


def graph_thresholds(tolerances: dict[str, Any], component: str, precision: str) -> dict[str, float] | None:
    """Thresholds of one graph variant; None when the file sets none (then it is not gated, only reported)."""
    entry = tolerances["graph"].get(component, {}).get(precision)
    return {k: float(v) for k, v in entry.items() if k in GRAPH_METRICS} if entry else None


def video_thresholds(tolerances: dict[str, Any], precision: str) -> dict[str, float] | None:
    """Thresholds of the end-to-end video at one precision; None when the file sets none."""
    entry = tolerances["video"].get(precision)
    return {k: float(v) for k, v in entry.items() if k in VIDEO_METRICS} if entry else None


def expected_graph_variants(tolerances: dict[str, Any]) -> list[tuple[str, str]]:
    """Every (component, precision) the file has thresholds for: what a complete target would ship."""
    return [(c, p) for c, by_precision in tolerances["graph"].items() for p in by_precision]


def adherence_max_drop(tolerances: dict[str, Any]) -> float:
    """[adherence].max_drop: how far a precision's color / motion accuracy may fall below FP32's."""
    try:
        return float(tolerances["adherence"]["max_drop"])
    except KeyError as exc:
        raise T2VError("the eval set asks for prompt adherence but the tolerances file has no [adherence] max_drop") from exc
