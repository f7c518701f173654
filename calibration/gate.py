"""The accuracy gate: a quantized denoiser against FP32 on held-out data, thresholds from thresholds.json."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from t2vtrt.build.artifacts import ArtifactPaths
from t2vtrt.calibration.graphs import run_first_output, session
from t2vtrt.calibration.metrics import denoiser_metrics
from t2vtrt.calibration.settings import Generation
from t2vtrt.runtime.backends import Feeds
from t2vtrt.runtime.errors import T2VError
from t2vtrt.runtime.step_schedule import StepSchedule

THRESHOLDS_FILE = Path(__file__).with_name("thresholds.json")
ADHERENCE_GATED = ("color", "motion")  # the attributes the shapes model gets right in FP32 (shape does not)


@dataclass(frozen=True)
class Thresholds:
    """The INT8 accuracy budget of one model; the sensitivity sweep aims inside it by plan_margin."""

    denoiser_rel_l2_max: float
    denoiser_cosine_min: float
    video_psnr_min_db: float
    video_ssim_min: float = 0.9
    adherence_max_drop: float = 0.02
    plan_margin: float = 0.8
    video_margin_db: float = 1.0
    max_float_step_share: float = 0.5

    def plan_target(self) -> "Thresholds":
        """The stricter limits the precision plan is built to meet (so the gate passes with margin)."""
        return replace(
            self,
            denoiser_rel_l2_max=self.denoiser_rel_l2_max * self.plan_margin,
            denoiser_cosine_min=1.0 - (1.0 - self.denoiser_cosine_min) * self.plan_margin,
            plan_margin=1.0,
        )

    def with_video_margin(self) -> "Thresholds":
        """The worst-frame PSNR limit raised by video_margin_db (the schedule search aims there; the gate checks the plain limits)."""
        return replace(self, video_psnr_min_db=self.video_psnr_min_db + self.video_margin_db, video_margin_db=0.0)


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
    """Why video metrics (worst-frame PSNR, worst SSIM, adherence drop) miss the limits (empty when they pass)."""
    failures = []
    if not metrics["psnr_db_min"] >= limits.video_psnr_min_db:
        failures.append(f"video PSNR {metrics['psnr_db_min']:.2f} dB (worst frame) < {limits.video_psnr_min_db:.2f} dB")
    if "ssim_min" in metrics and not metrics["ssim_min"] >= limits.video_ssim_min:
        failures.append(f"video SSIM {metrics['ssim_min']:.3f} (worst frame) < {limits.video_ssim_min:.3f}")
    for name, drop in (metrics.get("adherence_drop") or {}).items():
        if not drop <= limits.adherence_max_drop + 1e-9:
            failures.append(f"{name} adherence {drop:.0%} below FP32's (allowed {limits.adherence_max_drop:.0%})")
    return failures


def evaluate_denoiser(graph: Any, feeds: list[Feeds], reference: np.ndarray) -> dict[str, float]:
    """A graph's (path or model) output on `feeds` against the FP32 reference output."""
    return denoiser_metrics(run_first_output(session(graph), feeds), reference)


@dataclass
class VideoCase:
    """One held-out prompt and seed, with the FP32 video it must reproduce."""

    prompt: str
    seed: int
    reference: np.ndarray


def reference_videos(paths: ArtifactPaths, prompts: list[str], seeds: tuple[int, ...], generation: Generation | None = None) -> list[VideoCase]:
    """FP32 videos of every prompt x seed with the manifest defaults (`generation` replacing some)."""
    from t2vtrt.calibration.reference import onnx_pipeline

    pipe = onnx_pipeline(paths, generation=generation)
    cases = [VideoCase(p, s, pipe(p, seed=s)) for p in prompts for s in seeds]
    pipe.close()
    return cases


def video_metrics(videos: list[np.ndarray], cases: list[VideoCase], adherence: bool) -> dict[str, Any]:
    """Videos against their cases' FP32 videos: PSNR per frame, SSIM, and with `adherence` the drop in color/motion
    accuracy and the object's position/color error (the shapes world's analytic evaluator)."""
    from t2vtrt.build.compare.frames import psnr_per_frame, ssim_per_frame

    per_video = [psnr_per_frame(c.reference, v).tolist() for v, c in zip(videos, cases)]
    frames = [v for video in per_video for v in video]
    ssim = [float(x) for v, c in zip(videos, cases) for x in ssim_per_frame(c.reference, v)]
    out: dict[str, Any] = {
        "psnr_db_per_frame": per_video,
        "psnr_db_min": min(frames),
        "psnr_db_mean": float(np.mean(frames)),
        "ssim_min": min(ssim),
        "ssim_mean": float(np.mean(ssim)),
    }
    if adherence:
        from t2vtrt.build.shapes import adherence as shapes

        wanted = [shapes.score(c.prompt, c.reference) for c in cases]
        got = [shapes.score(c.prompt, v) for v, c in zip(videos, cases)]
        fp32, quantized = shapes.accuracy(wanted), shapes.accuracy(got)
        errors = [shapes.semantic_errors(v, c.reference) for v, c in zip(videos, cases)]
        positions = [e["position_px_max"] for e in errors if e["position_px_max"] is not None]
        out.update(
            {
                "adherence": quantized,
                "adherence_fp32": fp32,
                "adherence_drop": {name: fp32[name] - quantized[name] for name in ADHERENCE_GATED},
                "position_px_max": max(positions) if positions else None,
                "color_error_max": max((e["color_max"] for e in errors if e["color_max"] is not None), default=None),
                "object_missing_frames": sum(e["missing_frames"] for e in errors),
            }
        )
    return out


def evaluate_video(pipe: Any, cases: list[VideoCase], adherence: bool) -> dict[str, Any]:
    """The videos of every case through `pipe` (manifest defaults), judged against the FP32 videos."""
    return video_metrics([pipe(case.prompt, seed=case.seed) for case in cases], cases, adherence)


def _row(float_steps: int, schedule: StepSchedule | None, video: dict[str, Any]) -> dict[str, Any]:
    """One tried schedule, for gate.json."""
    keep = ("psnr_db_min", "psnr_db_mean", "ssim_min", "adherence_drop", "position_px_max", "color_error_max")
    return {"float_steps": float_steps, "schedule": schedule.to_json() if schedule else None, **{k: video[k] for k in keep if k in video}}


def schedule_search(
    paths: ArtifactPaths,
    graph: Path,
    precision: str,
    cases: list[VideoCase],
    limits: Thresholds,
    adherence: bool,
    generation: Generation | None = None,
) -> tuple[StepSchedule | None, int, dict[str, Any], list[dict[str, Any]]]:
    """The fewest first sampler steps run in FP32 (at most max_float_step_share of them) for which the videos meet
    the budget with margin.

    Quantization error early in the trajectory moves the whole video (calibration/README.md, measured per step);
    running the first k steps in the float graph is the runtime's step schedule. Returns (schedule or None for
    all-INT8, k, the chosen videos' metrics, every tried k). k = the step count means no allowed schedule met the
    budget (the metrics are then the best tried): the caller fails the gate.
    """
    from t2vtrt.calibration.reference import onnx_manifest
    from t2vtrt.runtime.pipeline import Pipeline
    from t2vtrt.runtime.step_schedule import first_steps_schedule, sampler_timesteps

    manifest = onnx_manifest(paths, graph, precision, generation)
    timesteps = sampler_timesteps(manifest)
    target = limits.with_video_margin()
    pipe = Pipeline(manifest, precision=precision, schedule=False)
    rows: list[dict[str, Any]] = []
    best: tuple[float, int, StepSchedule | None, dict[str, Any]] | None = None
    try:
        for k in range(int(limits.max_float_step_share * len(timesteps)) + 1):
            pipe.schedule = first_steps_schedule("fp32", timesteps, k)
            video = evaluate_video(pipe, cases, adherence)
            rows.append(_row(k, pipe.schedule, video))
            if not video_failures(video, target):
                return pipe.schedule, k, video, rows
            if best is None or video["psnr_db_min"] > best[0]:
                best = (video["psnr_db_min"], k, pipe.schedule, video)
    finally:
        pipe.close()
    assert best is not None
    return best[2], len(timesteps), best[3], rows


@dataclass
class Verdict:
    """One variant's gate result."""

    variant: str
    denoiser: dict[str, float]
    video: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    schedule: StepSchedule | None = None
    float_steps: int = 0
    steps: int = 0
    search: list[dict[str, Any]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when no limit is missed."""
        return not self.failures

    def to_json(self) -> dict[str, Any]:
        """The gate.json entry."""
        return {
            "variant": self.variant,
            "passed": self.passed,
            "denoiser": self.denoiser,
            "video": self.video,
            "schedule": self.schedule.to_json() if self.schedule else None,
            "float_steps": self.float_steps,
            "steps": self.steps,
            "schedule_search": self.search,
            "failures": self.failures,
        }


def quantized_calls(feeds: list[Feeds], reference: np.ndarray, schedule: StepSchedule | None) -> tuple[list[Feeds], np.ndarray]:
    """The captured calls a schedule runs in the quantized graph, with their rows of the FP32 reference output."""
    from t2vtrt.calibration.capture import timestep_of

    rows, kept, start = [], [], 0
    for feed in feeds:
        count = len(next(iter(feed.values())))  # every denoiser input is batch-first; names differ per family
        if schedule is None or not schedule.uses_fallback(timestep_of(feed)):
            kept.append(feed)
            rows.append(reference[start : start + count])
        start += count
    return kept, (np.concatenate(rows) if rows else reference[:0])


def judge(
    paths: ArtifactPaths,
    variant: str,
    graph: Path,
    precision: str,
    feeds: list[Feeds],
    reference: np.ndarray,
    cases: list[VideoCase],
    limits: Thresholds,
    adherence: bool = False,
    generation: Generation | None = None,
) -> Verdict:
    """End-to-end and denoiser checks of one quantized graph, with the step schedule that meets the video budget.

    The denoiser metrics cover the captured held-out calls the chosen schedule runs in INT8 (the others never
    reach the quantized graph).
    """
    from t2vtrt.runtime.step_schedule import sampler_timesteps

    steps = len(sampler_timesteps(_manifest_for(paths, generation)))
    searched = schedule_search(paths, graph, precision, cases, limits, adherence, generation) if cases else None
    schedule, float_steps, video, search = searched or (None, 0, {}, [])
    failures = []
    if cases and float_steps >= steps:
        failures.append(
            f"no step schedule with at most {limits.max_float_step_share:.0%} of the steps in float meets the "
            f"video budget with {limits.video_margin_db:g} dB margin (best worst frame {video['psnr_db_min']:.2f} dB)"
        )
    kept, kept_reference = quantized_calls(feeds, reference, schedule)
    den = evaluate_denoiser(graph, kept, kept_reference) if kept else evaluate_denoiser(graph, feeds, reference)
    failures += denoiser_failures(den, limits) + (video_failures(video, limits) if video else [])
    return Verdict(variant, {**den, "calls": len(kept) or len(feeds)}, video, failures, schedule, float_steps, steps, search)


def _manifest_for(paths: ArtifactPaths, generation: Generation | None) -> Any:
    """The in-memory FP32 manifest over onnx/ (scheduler and defaults)."""
    from t2vtrt.calibration.reference import onnx_manifest

    return onnx_manifest(paths, generation=generation)


# Which gate verdict's step schedule each quantized graph ships with: the TensorRT Q/DQ+FP16 graph has the
# int8-qdq graph's placement and scales (its ONNX Runtime stand-in), the U8S8 graph its own verdict.
SCHEDULE_SOURCE = {"denoiser.int8.onnx": "int8-qdq", "denoiser.int8-cpuverify.onnx": "int8-qdq", "denoiser.int8-u8s8.onnx": "u8s8"}


def gated_schedule(gate_file: Path, graph: Path, fallback: str) -> dict[str, Any] | None:
    """The step schedule the gate chose for `graph` (fallback renamed to the target's float variant), None for all-INT8.

    One-line error when gate.json does not vouch for this very file (a graph not gated, or changed since).
    """
    from t2vtrt.runtime.files import sha256_file

    rerun = "re-run `t2vtrt quantize` (make engines INT8=1)"
    if not gate_file.is_file():
        raise T2VError(f"{graph.name} has no gate verdict ({gate_file} is missing): {rerun}")
    report = json.loads(gate_file.read_text())
    if report.get("graphs", {}).get(graph.name) != sha256_file(graph) or not report.get("passed"):
        raise T2VError(f"{graph.name} is not the graph {gate_file} passed: {rerun}")
    if report.get("gated") is False:
        return None  # quantized with the gate turned off (run_quantize(gate=False)): no verdict, no schedule
    verdict = next((v for v in report["variants"] if v["variant"] == SCHEDULE_SOURCE[graph.name]), None)
    if verdict is None or not verdict.get("passed"):
        raise T2VError(f"{gate_file} holds no passed verdict for {graph.name}: {rerun}")
    schedule = verdict.get("schedule")
    if not schedule:
        return None
    return {
        **schedule,
        "fallback": fallback,
        "reason": f"the gate's videos met the budget with the first {verdict['float_steps']} of {verdict['steps']} steps in float",
    }
