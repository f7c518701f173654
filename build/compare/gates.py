"""Pass/fail of one comparison against its thresholds, with failure lines that name what failed."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from t2vtrt.build.compare.tolerances import GRAPH_METRICS, VIDEO_METRICS

PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"


@dataclass
class Check:
    """One gated comparison: a graph variant, a video precision, or today's reference vs the golden set."""

    kind: str  # graph | video | golden-graph | golden-video
    subject: str  # "denoiser int8", "video int8", "golden denoiser", ...
    precision: str
    status: str = PASSED
    metrics: dict[str, Any] = field(default_factory=dict)
    thresholds: dict[str, float] | None = None
    failures: list[str] = field(default_factory=list)
    reason: str = ""  # why it was skipped
    extra: dict[str, Any] = field(default_factory=dict)

    def fail(self, message: str) -> None:
        """Record one failure line."""
        self.failures.append(f"{self.subject}: {message}")
        self.status = FAILED

    def to_json(self) -> dict[str, Any]:
        """The accuracy.json form."""
        return asdict(self)


def skipped(kind: str, subject: str, precision: str, reason: str) -> Check:
    """A comparison that did not run: listed in the report as skipped, never as passed."""
    return Check(kind, subject, precision, status=SKIPPED, reason=reason)


def gate_graph(check: Check, worst: dict[str, dict[str, float]], nonfinite: dict[str, int], thresholds: dict[str, float] | None) -> Check:
    """Fail on NaN/Inf, on a missing threshold, or on any metric beyond its threshold (per output)."""
    check.metrics = {out: {**m, "nonfinite": nonfinite.get(out, 0)} for out, m in worst.items()}
    check.thresholds = thresholds
    for output, count in nonfinite.items():
        if count:
            check.fail(f"output {output!r} has {count} NaN/Inf values")
    if thresholds is None:
        table = "graph." + ".".join(check.subject.split(" "))
        check.fail(f"no thresholds for {check.subject} in the tolerances file; measure it and add [{table}]")
        return check
    for output, metrics in worst.items():
        for metric, limit in thresholds.items():
            _gate_value(check, metric, metrics[metric], limit, GRAPH_METRICS[metric], f" (output {output!r})")
    return check


def gate_video(check: Check, psnr: dict[str, np.ndarray], ssim: dict[str, np.ndarray], thresholds: dict[str, float] | None) -> Check:
    """Per case: min and mean of per-frame PSNR and SSIM, each against its threshold."""
    check.thresholds = thresholds
    for key in psnr:
        summary = video_summary(psnr[key], ssim[key])
        check.metrics[key] = {**summary, "psnr": [round(float(v), 3) for v in psnr[key]], "ssim": [round(float(v), 5) for v in ssim[key]]}
        if thresholds is None:
            continue
        for metric, limit in thresholds.items():
            _gate_value(check, metric, summary[metric], limit, VIDEO_METRICS[metric], f" ({key})")
    if thresholds is None:
        check.fail(f"no thresholds for video {check.precision} in the tolerances file; add [video.{check.precision}]")
    return check


def video_summary(psnr: np.ndarray, ssim: np.ndarray) -> dict[str, float]:
    """min and mean of per-frame PSNR (dB) and SSIM."""
    return {"psnr_min": float(np.min(psnr)), "psnr_mean": float(np.mean(psnr)), "ssim_min": float(np.min(ssim)), "ssim_mean": float(np.mean(ssim))}


def _gate_value(check: Check, metric: str, value: float, limit: float, direction: str, where: str) -> None:
    """One metric against one threshold; NaN always fails."""
    bad = math.isnan(value) or (value > limit if direction == "max" else value < limit)
    if bad:
        sign = ">" if direction == "max" else "<"
        check.fail(f"{metric} {value:.4g} {sign} threshold {limit:.4g}{where}")
