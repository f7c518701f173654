"""The accuracy gate: a quantized denoiser against FP32 on held-out data, thresholds from thresholds.json."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from t2vtrt.build.artifacts import ArtifactPaths
from t2vtrt.calibration.graphs import run_first_output, session
from t2vtrt.calibration.metrics import denoiser_metrics, psnr_per_frame
from t2vtrt.runtime.errors import T2VError

THRESHOLDS_FILE = Path(__file__).with_name("thresholds.json")
Feeds = dict[str, np.ndarray]


@dataclass(frozen=True)
class Thresholds:
    """Pass/fail limits for one model; the sensitivity sweep aims inside them by plan_margin."""

    denoiser_rel_l2_max: float
    denoiser_cosine_min: float
    video_psnr_min_db: float
    plan_margin: float = 0.8

    def plan_target(self) -> "Thresholds":
        """The stricter limits the precision plan is built to meet (so the gate passes with margin)."""
        return Thresholds(self.denoiser_rel_l2_max * self.plan_margin,
                          1.0 - (1.0 - self.denoiser_cosine_min) * self.plan_margin, self.video_psnr_min_db, 1.0)


def load_thresholds(model_name: str, path: Path = THRESHOLDS_FILE) -> Thresholds:
    """The 'default' thresholds overlaid with the model's own entry."""
    data = json.loads(path.read_text())
    merged = {k: v for k, v in {**data["default"], **data.get(model_name, {})}.items() if not k.startswith("_")}
    try:
        return Thresholds(**merged)
    except TypeError as exc:
        raise T2VError(f"{path}: {exc}") from exc


def denoiser_failures(metrics: dict[str, float], limits: Thresholds) -> list[str]:
    """Why denoiser metrics miss the limits (empty when they pass)."""
    failures = []
    if not metrics["rel_l2"] <= limits.denoiser_rel_l2_max:
        failures.append(f"denoiser rel L2 {metrics['rel_l2']:.4f} > {limits.denoiser_rel_l2_max:.4f}")
    if not metrics["cosine"] >= limits.denoiser_cosine_min:
        failures.append(f"denoiser cosine {metrics['cosine']:.5f} < {limits.denoiser_cosine_min:.5f}")
    return failures


def video_failures(metrics: dict[str, Any], limits: Thresholds) -> list[str]:
    """Why video metrics miss the limits (empty when they pass)."""
    worst = metrics["psnr_db_min"]
    return [] if worst >= limits.video_psnr_min_db else [f"video PSNR {worst:.2f} dB (worst frame) < {limits.video_psnr_min_db:.2f} dB"]


def evaluate_denoiser(graph: Any, feeds: list[Feeds], reference: np.ndarray) -> dict[str, float]:
    """A graph's (path or model) output on `feeds` against the FP32 reference output."""
    return denoiser_metrics(run_first_output(session(graph), feeds), reference)


@dataclass
class VideoCase:
    """One held-out prompt and seed, with the FP32 video it must reproduce."""

    prompt: str
    seed: int
    reference: np.ndarray


def reference_videos(paths: ArtifactPaths, prompts: list[str], seeds: tuple[int, ...]) -> list[VideoCase]:
    """FP32 videos of every prompt x seed with the manifest defaults."""
    from t2vtrt.calibration.reference import onnx_pipeline

    pipe = onnx_pipeline(paths)
    cases = [VideoCase(p, s, pipe(p, seed=s)) for p in prompts for s in seeds]
    pipe.close()
    return cases


def evaluate_video(paths: ArtifactPaths, graph: Path, precision: str, cases: list[VideoCase]) -> dict[str, Any]:
    """PSNR per frame of the videos made with `graph` as the denoiser against the FP32 videos."""
    from t2vtrt.calibration.reference import onnx_pipeline

    pipe = onnx_pipeline(paths, graph, precision)
    per_video = [psnr_per_frame(pipe(case.prompt, seed=case.seed), case.reference) for case in cases]
    pipe.close()
    frames = [v for video in per_video for v in video]
    return {"psnr_db_per_frame": per_video, "psnr_db_min": min(frames), "psnr_db_mean": float(np.mean(frames))}


@dataclass
class Verdict:
    """One variant's gate result."""

    variant: str
    denoiser: dict[str, float]
    video: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when no limit is missed."""
        return not self.failures

    def to_json(self) -> dict[str, Any]:
        """The gate.json entry."""
        return {"variant": self.variant, "passed": self.passed, "denoiser": self.denoiser, "video": self.video,
                "failures": self.failures}


def judge(paths: ArtifactPaths, variant: str, graph: Path, precision: str, feeds: list[Feeds], reference: np.ndarray,
          cases: list[VideoCase], limits: Thresholds) -> Verdict:
    """Denoiser and end-to-end checks of one quantized graph."""
    den = evaluate_denoiser(graph, feeds, reference)
    video = evaluate_video(paths, graph, precision, cases) if cases else {}
    failures = denoiser_failures(den, limits) + (video_failures(video, limits) if video else [])
    return Verdict(variant, den, video, failures)
