"""The build stages as calls: each resolves the model's artifacts, holds its build lock while it writes and
records logs/<n>-<stage>.json. The `t2vtrt` stage commands and `t2vtrt nightly` both run the stages through here.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from t2vtrt.build.artifacts import ArtifactPaths, build_lock
from t2vtrt.build.stage_record import record_stage
from t2vtrt.runtime.errors import T2VError

CALIBRATE_FILES = ("denoiser.npz", "denoiser_eval.npz", "ranges.json", "denoiser.cache", "precision_plan.json")


def artifact_paths(model: str, artifacts: Path) -> ArtifactPaths:
    """artifacts/<name> for an embedded name or a model directory (its resolved basename)."""
    from t2vtrt.build.models import artifact_name

    return ArtifactPaths(artifacts / artifact_name(model))


def built_paths(model: str, artifacts: Path) -> ArtifactPaths:
    """artifacts/<name> of a model that export has run for; refused before any lock or folder is made."""
    paths = artifact_paths(model, artifacts)
    if not paths.root.is_dir():
        from t2vtrt.build.models import EMBEDDED

        raise T2VError(
            f"no artifacts for model {model!r} under {artifacts}: run `t2vtrt export --model {model}` first "
            f"(embedded models: {', '.join(sorted(EMBEDDED))}; or a diffusers directory)"
        )
    return paths


def check_model(model: str) -> None:
    """Refuse an unknown MODEL before the build lock makes artifacts/.locks/<name>.lock for it."""
    from t2vtrt.build.models import EMBEDDED, check_model_arg

    if model not in EMBEDDED:
        check_model_arg(model)


def export(model: str, artifacts: Path, quiet: bool = False, exporter: str | None = None) -> dict[str, Any]:
    """Export the model's graphs (onnx/*.onnx + export.json); returns export.json's content."""
    from t2vtrt.build.export import run_export
    from t2vtrt.build.task_progress import task_bar

    check_model(model)
    start = time.perf_counter()
    with build_lock(artifact_paths(model, artifacts).root), task_bar("export", 3, quiet) as advance:
        info = run_export(model, artifacts, on_done=lambda name, s: advance(f"{name} {s:.1f}s"), exporter=exporter)
    paths = artifact_paths(info["model"]["name"], artifacts)
    record_stage(paths.root, "1-export", time.perf_counter() - start, [paths.onnx(c) for c in info["components"]])
    return info


def surgery(model: str, artifacts: Path, quiet: bool = False, passes: list[str] | None = None) -> dict[str, Any]:
    """Patch the exported graphs (onnx/*.opt.onnx + surgery.json); returns the stage's report."""
    from t2vtrt.build.surgery.stage import run_surgery_stage
    from t2vtrt.build.task_progress import task_bar

    paths = built_paths(model, artifacts)
    start = time.perf_counter()
    with build_lock(paths.root), task_bar("surgery", 3, quiet) as advance:
        report = run_surgery_stage(paths, passes, on_done=advance)
    record_stage(paths.root, "2-surgery", time.perf_counter() - start, [paths.onnx(c, "opt") for c in report["components"]])
    return report


def calibrate(
    model: str,
    artifacts: Path,
    quiet: bool = False,
    plan_file: Path | None = None,
    method: str | None = None,
    samples: int | None = None,
    seed: int | None = None,
    trt_version: str | None = None,
    budget_name: str | None = None,
) -> dict[str, Any]:
    """Capture denoiser inputs, calibrate INT8 scales, decide FP16 fallbacks (calib/); returns the stage's summary."""
    from t2vtrt.calibration.phase_progress import phase_bars
    from t2vtrt.calibration.stage import model_budget, run_calibrate

    paths = built_paths(model, artifacts)
    budget = model_budget(paths, budget_name).with_overrides(samples=samples, seed=seed)
    with build_lock(paths.root), phase_bars(quiet) as on_event:
        done = run_calibrate(paths, plan_file, method, budget, on_event, trt_version)
    record_stage(paths.root, "2b-calibrate", done["seconds"], [paths.calib_dir / f for f in CALIBRATE_FILES])
    return done


def quantize(model: str, artifacts: Path, quiet: bool = False, cache_file: Path | None = None) -> dict[str, Any]:
    """Write onnx/denoiser.int8{,-cpuverify,-u8s8}.onnx from the plan and scales, gated; returns the gate's report."""
    from t2vtrt.build.provenance import quantize_inputs, record_quantized
    from t2vtrt.calibration.phase_progress import phase_bars
    from t2vtrt.calibration.stage import run_quantize

    paths = built_paths(model, artifacts)
    with build_lock(paths.root), phase_bars(quiet) as on_event:
        made_from = quantize_inputs(paths)
        report = run_quantize(paths, cache_file, on_event=on_event)
        record_quantized(paths, made_from)
    record_stage(paths.root, "2c-quantize", report["seconds"], [paths.onnx("denoiser", k) for k in ("int8", "int8-cpuverify", "int8-u8s8")])
    return report


def engines(
    model: str,
    artifacts: Path,
    target: str,
    quiet: bool = False,
    dry_run: bool = False,
    low_vram: bool = False,
    version_compatible: bool = False,
    hardware_compat: str | None = None,
) -> Path:
    """Build engines/<target>/ with its manifest.json; returns the manifest's path."""
    from t2vtrt.build.engines import build_engines

    paths = built_paths(model, artifacts)
    start = time.perf_counter()
    with build_lock(paths.root):
        manifest = build_engines(
            paths, target, quiet=quiet, dry_run=dry_run, low_vram=low_vram, version_compatible=version_compatible, hardware_compat=hardware_compat
        )
    record_stage(paths.root, f"3-engines-{target}", time.perf_counter() - start, sorted(manifest.parent.iterdir()))
    return manifest


def calibrate_line(done: dict[str, Any]) -> str:
    """The calibrate stage's one-line result."""
    result, calibration = done["result"], done["calibration"]
    return (
        f"{done['plan']}  rel L2 {result['rel_l2']:.4f}  cosine {result['cosine']:.5f}  ranges: {calibration['method']}, "
        f"entropy != max on {calibration['entropy_differs_from_max']}/{calibration['tensors']} tensors"
    )


def quantize_lines(report: dict[str, Any]) -> list[str]:
    """The quantize stage's result: one line per gated variant."""
    lines = []
    for verdict in report["variants"]:
        den, video = verdict["denoiser"], verdict["video"]
        steps = f"  first {verdict['float_steps']} of {verdict['steps']} steps in FP32" if verdict.get("float_steps") else ""
        lines.append(
            f"{verdict['variant']}: rel L2 {den['rel_l2']:.4f} cosine {den['cosine']:.5f}"
            + (f" video PSNR min {video['psnr_db_min']:.1f} dB SSIM min {video['ssim_min']:.3f}" if video else "")
            + steps
            + "  PASSED"
        )
    return lines


def build_all(model: str, target: str, artifacts: Path, quiet: bool = True) -> Path:
    """Every stage into `artifacts`, as `make engines` runs them (in process); returns engines/<target>/."""
    export(model, artifacts, quiet)
    surgery(model, artifacts, quiet)
    print(calibrate_line(calibrate(model, artifacts, quiet)), flush=True)
    for line in quantize_lines(quantize(model, artifacts, quiet)):
        print(line, flush=True)
    print(engines(model, artifacts, target, quiet), flush=True)
    return artifact_paths(model, artifacts).engines_dir(target)
