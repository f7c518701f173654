"""The compare stage: every built variant of a target vs the FP32 ONNX reference, per graph and end to end, and vs diffusers."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any, Callable

import numpy as np

from t2vtrt.build.artifacts import ArtifactPaths
from t2vtrt.build.compare import gates
from t2vtrt.build.compare.adherence import adherence_checks
from t2vtrt.build.compare.capture import EvalSet, ReferenceCapture, capture_reference, default_eval_path, generate_videos, load_eval_set, save_inputs
from t2vtrt.build.compare.frames import psnr_per_frame, ssim_per_frame
from t2vtrt.build.compare.gates import Check, skipped
from t2vtrt.build.compare.golden import Golden, load_golden, save_golden
from t2vtrt.build.compare.metrics import compare_runners, nonfinite_counts, validate_finite, worst
from t2vtrt.build.compare.report import write_reports
from t2vtrt.build.compare.run import CompareRun
from t2vtrt.build.compare.runners import GOLDEN, REFERENCE, onnx_runner, runner_name, tensorrt_available, variant_runner
from t2vtrt.build.compare.oracle import ONNX_FP32, oracle_checks
from t2vtrt.build.compare.tolerances import adherence_max_drop, expected_precisions, graph_thresholds, load_tolerances, video_thresholds
from t2vtrt.build.engines.manifest import tool_versions
from t2vtrt.runtime.backends import Feeds
from t2vtrt.runtime.errors import T2VError
from t2vtrt.runtime.files import sha256_file
from t2vtrt.runtime.manifest import Manifest, load_manifest

Progress = Callable[[str], None]


def step_count(target_dir: Path) -> int:
    """The progress steps run_compare reports for a target: the reference, each component, the videos, diffusers."""
    return len(load_manifest(target_dir, verify_hashes=False).data["components"]) + 3


def run_compare(
    target_dir: Path,
    paths: ArtifactPaths | None = None,
    tolerances: dict[str, Any] | None = None,
    eval_set: EvalSet | None = None,
    golden_dir: Path | None = None,
    save_golden_set: bool = False,
    reports_dir: Path | None = None,
    on_step: Progress | None = None,
) -> CompareRun:
    """Compare, write reports/accuracy.{json,md} + PNGs, and return the run (`.passed` is the gate)."""
    target_dir = Path(target_dir)
    manifest = load_manifest(target_dir)  # hash-checked: we compare exactly what the manifest ships
    paths = paths or ArtifactPaths(target_dir.resolve().parent.parent)
    tolerances = tolerances or load_tolerances()
    eval_set = eval_set or load_eval_set(default_eval_path(manifest.data["model"]["name"]))
    step = on_step or (lambda _: None)
    model = manifest.data["model"]
    golden, golden_check = _open_golden(paths, model["hash"], golden_dir, save_golden_set)

    step("reference")
    capture = capture_reference(manifest, paths, eval_set)
    reports = reports_dir or paths.reports_dir
    run = CompareRun(reference_videos=capture.videos, reports_dir=reports, target=manifest.data["target"]["name"])
    reference_outputs: dict[str, list[Any]] = {}
    inputs: dict[str, list[Feeds]] = {}
    for component in manifest.data["components"]:
        step(component)
        inputs[component] = golden.inputs(component) if golden else capture.inputs[component]
        save_inputs(reports / "inputs" / f"{component}.json", inputs[component])
        checks, reference_outputs[component] = compare_component(manifest, paths, component, inputs[component], tolerances, golden)
        run.checks += checks
    run.checks += _missing_variants(manifest, tolerances)
    step("videos")
    run.checks += compare_videos(manifest, target_dir, capture, eval_set, tolerances, run)
    step("diffusers")
    oracle, run.diffusers_videos = oracle_checks(manifest, paths, eval_set, capture, {ONNX_FP32: capture.videos, **run.videos}, tolerances)
    run.checks += oracle
    if eval_set.adherence:
        run.checks += adherence_checks(eval_set.cases(), capture.videos, run.videos, adherence_max_drop(tolerances))
    run.checks += _golden_video_checks(golden, capture, tolerances)
    if save_golden_set:
        save_golden(golden_dir or paths.root / "golden", model, eval_set.to_json(), inputs, reference_outputs, capture.videos)
    if golden_check is not None:
        run.checks.append(golden_check)
    run.report = build_report(manifest, target_dir, eval_set, run, golden, golden_dir or paths.root / "golden", save_golden_set)
    write_reports(reports, run)
    return run


def _open_golden(paths: ArtifactPaths, model_hash: str, golden_dir: Path | None, saving: bool) -> tuple[Golden | None, Check | None]:
    """The golden set to compare with: an explicit one must load; a missing default one is a skipped check."""
    if saving:
        return None, None
    if golden_dir is not None:
        return load_golden(golden_dir, model_hash), None
    default = paths.root / "golden"
    if not (default / "golden.json").is_file():
        return None, skipped("golden-graph", "golden", "fp32", f"no golden set at {default}: record one with `t2vtrt compare --save-golden`")
    return load_golden(default, model_hash), None


def compare_component(
    manifest: Manifest, paths: ArtifactPaths, component: str, feeds: list[Feeds], tolerances: dict[str, Any], golden: Golden | None
) -> tuple[list[Check], list[Any]]:
    """Run the reference and every runnable variant through polygraphy's Comparator on `feeds`; gate each."""
    from polygraphy.comparator import Comparator
    from polygraphy.logger import G_LOGGER

    checks: list[Check] = []
    runners = [onnx_runner(paths.onnx(component), REFERENCE)]
    variants = manifest.component(component)["variants"]
    for precision, variant in variants.items():
        runner = variant_runner(manifest.path(variant["file"]), variant["backend"], runner_name(component, precision))
        if runner is None:
            checks.append(
                skipped(
                    "graph", f"{component} {precision}", precision, f"{variant['backend']} variant: this machine has no GPU with tensorrt to run it"
                )
            )
        else:
            runners.append(runner)
    with G_LOGGER.verbosity(G_LOGGER.ERROR):
        results = Comparator.run(runners, data_loader=feeds)
    if golden is not None:
        results.append((GOLDEN, golden.outputs(component)))
        checks.append(
            _gate_graph_pair(results, GOLDEN, REFERENCE, "golden-graph", f"golden {component}", "fp32", _golden_graph_thresholds(tolerances))
        )
    if not validate_finite(results, REFERENCE):
        reference = Check("graph", f"{component} reference", "fp32")
        reference.fail(
            f"the FP32 ONNX reference {paths.onnx(component)} itself outputs NaN/Inf "
            f"({nonfinite_counts(results[REFERENCE])}); the exported model is broken"
        )
        checks.append(reference)
    for precision in variants:
        name = runner_name(component, precision)
        if name in results:
            runs = _scheduled_iterations(manifest, component, variants[precision], feeds)
            checks.append(
                _gate_graph_pair(
                    results,
                    REFERENCE,
                    name,
                    "graph",
                    f"{component} {precision}",
                    precision,
                    graph_thresholds(tolerances, component, precision, manifest.stages[component]),
                    runs,
                    backend=variants[precision]["backend"],
                    iterations=len(runs),
                )
            )
    return checks, list(results[REFERENCE])


def _scheduled_iterations(manifest: Manifest, component: str, variant: dict[str, Any], feeds: list[Feeds]) -> list[int]:
    """The recorded calls this variant really runs: a step schedule sends the others to its float fallback."""
    from t2vtrt.runtime.step_schedule import StepSchedule

    schedule = StepSchedule.from_json(variant.get("schedule"))
    if schedule is None:
        return list(range(len(feeds)))
    timestep = manifest.tensor(component, "timestep")["name"]  # only denoisers carry a schedule, and each has this role
    return [i for i, f in enumerate(feeds) if not schedule.uses_fallback(float(np.asarray(f[timestep]).reshape(-1)[0]))]


def _gate_graph_pair(
    results: Any,
    reference: str,
    candidate: str,
    kind: str,
    subject: str,
    precision: str,
    thresholds: dict[str, float] | None,
    runs: list[int] | None = None,
    **extra: Any,
) -> Check:
    """Metrics of `candidate` vs `reference` (worst over the iterations `runs`, default all), NaN/Inf-validated, gated."""
    check = Check(kind, subject, precision, extra=extra)
    counts = nonfinite_counts(results[candidate])
    if not validate_finite(results, candidate) and not any(counts.values()):
        counts = {"(polygraphy validation)": 1}  # polygraphy saw something our count did not: still a failure
    iterations = compare_runners(results, reference, candidate)
    chosen = [iterations[i] for i in runs] if runs is not None else iterations
    if not chosen:
        return skipped(kind, subject, precision, "its step schedule runs none of the recorded calls in this variant")
    return gates.gate_graph(check, worst(chosen), counts, thresholds)


def _golden_graph_thresholds(tolerances: dict[str, Any]) -> dict[str, float]:
    """[golden.graph]: today's reference vs the stored one (drift across onnxruntime / torch / exporter versions)."""
    return {k: float(v) for k, v in tolerances["golden"]["graph"].items()}


def _missing_variants(manifest: Manifest, tolerances: dict[str, Any]) -> list[Check]:
    """Variants the tolerances file knows (for the component or its stage) but this target did not build: skipped, never passed."""
    target = manifest.data["target"]["name"]
    out = []
    for component, stage in manifest.stages.items():
        for precision in expected_precisions(tolerances, component, stage):
            if precision not in manifest.component(component)["variants"]:
                out.append(skipped("graph", f"{component} {precision}", precision, f"not built for target {target}"))
    return out


def compare_videos(
    manifest: Manifest, target_dir: Path, capture: ReferenceCapture, eval_set: EvalSet, tolerances: dict[str, Any], run: CompareRun
) -> list[Check]:
    """Per built precision: the target's videos vs the FP32 ONNX reference videos, per-frame PSNR and SSIM."""
    built = _built_precisions(manifest)
    checks = [
        skipped("video", f"video {p}", p, f"not built for target {manifest.data['target']['name']}") for p in tolerances["video"] if p not in built
    ]
    for precision in built:
        check = Check("video", f"video {precision}", precision)
        if not _runnable(manifest, precision):
            checks.append(skipped("video", check.subject, precision, "tensorrt variants: this machine has no GPU with tensorrt"))
            continue
        try:
            videos = generate_videos(target_dir, precision, eval_set, capture)
        except T2VError as exc:  # e.g. NaN/Inf out of an engine: the runtime's own one-line error
            check.fail(str(exc))
            checks.append(check)
            continue
        run.videos[precision] = videos
        psnr = {k: psnr_per_frame(capture.videos[k], v) for k, v in videos.items()}
        ssim = {k: ssim_per_frame(capture.videos[k], v) for k, v in videos.items()}
        check = gates.gate_video(check, psnr, ssim, video_thresholds(tolerances, precision))
        if eval_set.adherence:
            _add_object_errors(check, capture.videos, videos)
        checks.append(check)
    return checks


def _add_object_errors(check: Check, reference: dict[str, np.ndarray], videos: dict[str, np.ndarray]) -> None:
    """Per case, the object's position error (pixels) and color error against the FP32 video (reported, not gated).

    PSNR alone does not tell a video shifted by a pixel from a different video; these do.
    """
    from t2vtrt.build.shapes.adherence import semantic_errors

    for key, video in videos.items():
        errors = semantic_errors(video, reference[key])
        check.metrics[key].update({k: errors[k] for k in ("position_px_max", "position_px_mean", "color_max", "missing_frames")})


def _built_precisions(manifest: Manifest) -> list[str]:
    """Every precision some component was built at, fp32 first."""
    found = {p for c in manifest.data["components"].values() for p in c["variants"]}
    return sorted(found, key=lambda p: (p != "fp32", p))


def _runnable(manifest: Manifest, precision: str) -> bool:
    """Whether this machine can run the pipeline at `precision` (every variant it would pick)."""
    backends = {manifest.variant(c, precision)["backend"] for c in manifest.data["components"]}
    return backends <= {"onnxruntime"} or tensorrt_available()


def _golden_video_checks(golden: Golden | None, capture: ReferenceCapture, tolerances: dict[str, Any]) -> list[Check]:
    """Today's FP32 reference videos vs the golden ones (cases both have)."""
    if golden is None:
        return []
    stored = golden.videos()
    keys = [k for k in capture.videos if k in stored]
    check = Check("golden-video", "golden video", "fp32")
    if not keys:
        return [skipped("golden-video", "golden video", "fp32", "the golden set has none of this eval set's cases")]
    psnr = {k: psnr_per_frame(stored[k], capture.videos[k]) for k in keys}
    ssim = {k: ssim_per_frame(stored[k], capture.videos[k]) for k in keys}
    return [gates.gate_video(check, psnr, ssim, {k: float(v) for k, v in tolerances["golden"]["video"].items()})]


def build_report(
    manifest: Manifest, target_dir: Path, eval_set: EvalSet, run: CompareRun, golden: Golden | None, golden_dir: Path, saved_golden: bool
) -> dict[str, Any]:
    """accuracy.json: verdict, failures, every check, and the versions and hashes it was measured with."""
    data = manifest.data
    golden_info: dict[str, Any] = {"path": str(golden_dir), "status": "none"}
    if saved_golden:
        golden_info["status"] = "saved"
    elif golden is not None:
        golden_info.update(status="compared", created=golden.meta.get("created"), tools=golden.meta.get("tools"))
    return {
        "schema_version": 1,
        "passed": run.passed,
        "status": run.status,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": data["model"],
        "target": {**data["target"], "dir": str(target_dir)},
        "manifest_sha256": sha256_file(target_dir / "manifest.json"),
        "built_with": data.get("tools", {}),
        "tools": tool_versions(),
        "eval": eval_set.to_json(),
        "golden": golden_info,
        "failures": run.failures,
        "skipped": [f"{c.subject}: {c.reason}" for c in run.checks if c.status == gates.SKIPPED],
        "checks": [c.to_json() for c in run.checks],
    }
