"""The calibrate and quantize stages (docs/architecture.md#stages, #precision) over one model's artifacts.

calibrate: capture denoiser inputs (calibration + held-out prompts) -> Q/DQ placement by ModelOpt's rules with
    every quantizable node -> per-tensor ranges (MSE by default; entropy or max) -> TensorRT calibration cache -> per-group
    sensitivity sweep -> precision_plan.json (or a hand-edited plan, checked).
quantize: plan + cache -> denoiser.int8-cpuverify.onnx (Q/DQ, FP32 elsewhere), denoiser.int8.onnx
    (TensorRT: the same + FP16), denoiser.int8-u8s8.onnx (cpu target) -> accuracy gate -> installed together.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from t2vtrt.build.artifacts import ArtifactPaths, read_export_info
from t2vtrt.build.families import get_family
from t2vtrt.build.graphfiles import load_graph, needs_external_data
from t2vtrt.build.heap import blocks_returned_on_free
from t2vtrt.calibration import qdq
from t2vtrt.calibration.cache import read_cache, write_cache
from t2vtrt.calibration.capture import SELECTION_VERSION, Capture, capture, generation_settings
from t2vtrt.calibration.gate import Thresholds, Verdict, judge, load_thresholds, reference_videos
from t2vtrt.calibration.graphs import run_first_output, session
from t2vtrt.calibration.groups import Group, layer_groups
from t2vtrt.calibration.isolate import Call, run_isolated
from t2vtrt.calibration.paths import CalibPaths
from t2vtrt.calibration.placement import PLACEMENT_VERSION
from t2vtrt.calibration.plan import check_plan_nodes, fp16_nodes, load_plan, plan_json, save_plan
from t2vtrt.calibration.prompts import load_prompts
from t2vtrt.calibration.ranges import (
    RANGE_FIELDS,
    TensorRange,
    check_method,
    collect_ranges,
    differing,
    float_activations,
    load_ranges,
    save_ranges,
    scales,
)
from t2vtrt.calibration.reference import onnx_manifest
from t2vtrt.calibration.settings import Budget, Generation, budget_from_json, load_budget, load_named_budget
from t2vtrt.calibration.sweep import decide, make_measure, measure_groups
from t2vtrt.calibration.u8s8 import u8s8_ranges
from t2vtrt.runtime.errors import T2VError
from t2vtrt.runtime.files import sha256_file, write_json

Event = Callable[[str, int, int], None]  # (phase, done, total)
EVAL_SEED_OFFSET = 10_000  # held-out captures use other seeds than calibration's
ALGORITHMS = {
    "entropy": "TensorRT EntropyCalibration2: KL divergence over |x| histograms",
    "mse": "the amax minimising expected INT8 rounding + clipping error over |x| histograms",
    "max": "the observed max |x|",
}


def _emit(on_event: Event | None, phase: str, done: int, total: int) -> None:
    """Report progress when someone listens."""
    if on_event:
        on_event(phase, done, total)


def _model(paths: ArtifactPaths) -> tuple[str, Any]:
    """The model's name and family module, from the export record."""
    info = read_export_info(paths)
    return info["model"]["name"], get_family(info["model"]["family"])


def model_budget(paths: ArtifactPaths, name: str | None = None) -> Budget:
    """The model's calibration budget: its own entry over the size tier its denoiser's weights reach, or entry `name`."""
    from t2vtrt.build.graphfiles import data_path

    if name is not None:
        return load_named_budget(name)
    graph = paths.onnx("denoiser", "opt")
    data = data_path(graph)
    return load_budget(_model(paths)[0], graph.stat().st_size + (data.stat().st_size if data.is_file() else 0))


def _graphs_sha(paths: ArtifactPaths) -> str:
    """One hash over the graphs a capture runs (text encoder + denoiser)."""
    digest = hashlib.sha256()
    for component in ("text_encoder", "denoiser"):
        digest.update(sha256_file(paths.onnx(component, "opt")).encode())
    return digest.hexdigest()


def ensure_capture(
    paths: ArtifactPaths,
    target: Path,
    which: str,
    limit: int | None,
    samples: int,
    seed: int,
    on_event: Event | None = None,
    prompt_file: str | None = None,
    generation: Generation | None = None,
) -> Capture:
    """The capture at `target`, reused when made from the same prompts, graphs and settings, else made."""
    from t2vtrt.runtime.pipeline import Pipeline

    prompts = load_prompts(which, limit, prompt_file)
    manifest = onnx_manifest(paths, generation=generation)
    wanted = {
        "prompts_sha256": hashlib.sha256("\n".join(prompts).encode()).hexdigest(),
        "graphs_sha256": _graphs_sha(paths),
        "requested_samples": samples,
        "seed": seed,
        "selection": SELECTION_VERSION,
        **generation_settings(manifest),
    }
    phase = f"capture {which}"
    if target.is_file():
        try:
            old = Capture.load(target)
            if all(old.meta.get(k) == v for k, v in wanted.items()):
                _emit(on_event, phase, len(prompts), len(prompts))
                return old
        except T2VError:
            pass  # unreadable or empty: capture again
    pipe = Pipeline(manifest, precision="fp32")
    made = capture(pipe, prompts, samples, seed, on_step=lambda done, total: _emit(on_event, phase, done, total))
    pipe.close()
    made.meta.update(wanted)
    made.save(target)
    return made


def tool_crops(paths: ArtifactPaths, budget: Budget) -> dict[str, dict[int, int]]:
    """Per denoiser input, axis -> the size the placement's shapes keep (tool_frames, tool_latent)."""
    sizes = {"frames": budget.tool_frames, "latent_height": budget.tool_latent, "latent_width": budget.tool_latent}
    inputs = read_export_info(paths)["components"]["denoiser"]["inputs"]
    crops = {i["name"]: {axis: sizes[d] for axis, d in enumerate(i["shape"]) if isinstance(d, str) and sizes.get(d)} for i in inputs}
    return {name: axes for name, axes in crops.items() if axes}


def _layout(paths: ArtifactPaths, cp: CalibPaths, budget: Budget, on_event: Event | None) -> Any:
    """The Q/DQ placement with every quantizable node quantized, FP32 elsewhere (for ranges and the sweep).

    Reused while the source graph and the placement rule are the same: the placement depends on the graph, not on the data.
    """
    _emit(on_event, "Q/DQ placement", 0, 1)
    stamp = {"source_sha256": sha256_file(cp.source), "placement": PLACEMENT_VERSION}
    if not (cp.layout.is_file() and cp.layout_stamp.is_file() and json.loads(cp.layout_stamp.read_text()) == stamp):
        run_isolated(
            Call(
                "t2vtrt.calibration.placement:write_qdq_graph",
                {
                    "source": str(cp.source),
                    "output": str(cp.layout),
                    "data": str(cp.data),
                    "crops": tool_crops(paths, budget),
                    "nodes_to_exclude": [],
                },
                paths.root / "logs" / "placement-layout.log",
            )
        )
        write_json(cp.layout_stamp, stamp)
    _emit(on_event, "Q/DQ placement", 1, 1)
    return load_graph(cp.layout)


def _calibrate_ranges(
    cp: CalibPaths, source: Any, layout: Any, calib: Capture, budget: Budget, method: str, trt_version: str | None, on_event: Event | None
) -> tuple[dict[str, TensorRange], dict[str, Any]]:
    """Ranges of every tensor either INT8 graph quantizes -> ranges.json (reused for the same inputs) and the cache."""
    placed = list(qdq.activation_quantizers(layout))
    tensors = list(dict.fromkeys(placed + float_activations(source)))
    inputs = {
        "source_sha256": sha256_file(cp.source),
        "capture": _digest(calib.meta),
        "tensors": _digest(tensors),
        "num_bins": budget.num_bins,
        "num_quantized_bins": budget.num_quantized_bins,
        "hist_values": budget.hist_values,
        "fields": RANGE_FIELDS,
    }
    try:
        ranges, summary = load_ranges(cp.ranges) if cp.ranges.is_file() else ({}, {})
    except T2VError:
        ranges, summary = {}, {}  # an older record: computed again below
    if summary.get("inputs") != inputs:
        ranges = collect_ranges(
            source,
            tensors,
            calib.feeds,
            budget.num_bins,
            budget.num_quantized_bins,
            budget.stats_batch,
            on_run=lambda done, total: _emit(on_event, "ranges", done, total),
            hist_values=budget.hist_values,
        )
    summary = {
        "inputs": inputs,
        "method": method,
        "algorithm": ALGORITHMS[method],
        "num_bins": budget.num_bins,
        "num_quantized_bins": budget.num_quantized_bins,
        "samples": len(calib.feeds),
        "tensors": len(ranges),
        "entropy_differs_from_max": differing(ranges),
    }
    save_ranges(cp.ranges, ranges, summary)
    write_cache(cp.cache, scales({t: ranges[t] for t in placed}, method), trt_version)
    return ranges, summary


def _digest(data: Any) -> str:
    """sha256 of a JSON-able value."""
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def _hand_groups(plan: dict[str, Any]) -> list[Group]:
    """A hand-edited plan's groups, as given."""
    return [
        Group(g["name"], list(g["nodes"]), g.get("default_pattern"), dict(g.get("metrics") or {}), g["decision"], g.get("reason") or "hand-edited")
        for g in plan["groups"]
    ]


def _decide_plan(
    layout: Any, source: Any, family: Any, evals: Capture, budget: Budget, target: Thresholds, hand: dict[str, Any] | None, on_event: Event | None
) -> tuple[list[Group], dict[str, float]]:
    """Groups with decisions (swept, or a hand-edited plan's) and the held-out error of the result."""
    quantized = qdq.quantized_nodes(layout)
    feeds = evals.spread(budget.sweep_samples)
    measure = make_measure(layout, quantized, feeds, run_first_output(session(source), feeds))
    if hand:  # nodes no fp16 group names stay INT8, as they will in the quantize stage
        return _hand_groups(hand), measure(set(quantized) - set(fp16_nodes(hand)))
    op_types = {n.name: n.op_type for n in source.graph.node}
    groups = layer_groups({n: op_types[n] for n in quantized}, family)
    measure_groups(groups, measure, on_group=lambda _: _emit(on_event, "sensitivity sweep", sum(bool(g.metrics) for g in groups), len(groups)))
    return groups, decide(groups, measure, target)


def run_calibrate(
    paths: ArtifactPaths,
    plan_file: Path | None = None,
    method: str | None = None,
    budget: Budget | None = None,
    on_event: Event | None = None,
    trt_version: str | None = None,
) -> dict[str, Any]:
    """The calibrate stage; returns a summary. `method`: the activation range method (default: the budget's)."""
    if method is not None:
        check_method(method)
    start = time.perf_counter()
    cp = CalibPaths(paths)
    name, family = _model(paths)
    budget, limits = budget or model_budget(paths), load_thresholds(name)
    method = method or budget.method
    source = load_graph(cp.source)
    hand = load_plan(plan_file) if plan_file else None
    if hand:
        check_plan_nodes(hand, {n.name for n in source.graph.node}, str(cp.source))  # before the slow part
    generation = budget.generation()
    # Large buffers mapped on their own from the first session on: the captures' and the ranges' sessions then leave
    # no gigabytes of free heap behind, which the sweep's runs would touch (resident) instead of mapping fresh pages.
    with blocks_returned_on_free():
        calib = ensure_capture(
            paths, cp.data, "calibration", budget.prompts, budget.samples, budget.seed, on_event, budget.prompt_file("calibration"), generation
        )
        evals = ensure_capture(
            paths,
            cp.eval_data,
            "eval",
            budget.eval_prompts,
            budget.eval_samples,
            budget.seed + EVAL_SEED_OFFSET,
            on_event,
            budget.prompt_file("eval"),
            generation,
        )
        layout = _layout(paths, cp, budget, on_event)
        ranges, calibration = _calibrate_ranges(cp, source, layout, calib, budget, method, trt_version, on_event)
        qdq.set_activation_scales(layout, scales(ranges, method))
        groups, result = _decide_plan(layout, source, family, evals, budget, limits.plan_target(), hand, on_event)
    seconds = round(time.perf_counter() - start, 1)
    header = {
        "model": name,
        "family": family.NAME,
        "source": {"file": cp.source.name, "sha256": sha256_file(cp.source)},
        "plan_source": str(plan_file) if plan_file else "sensitivity sweep",
        "calibration": calibration,
        "target": limits.plan_target().__dict__,
        "sweep_samples": min(budget.sweep_samples, len(evals.feeds)),
        "budget": asdict(budget),  # quantize's gate generates and judges with the same budget
        "onnxruntime": _ort_record(),
    }
    totals = {"fp16_groups": sum(g.decision == "fp16" for g in groups), "int8_groups": sum(g.decision == "int8" for g in groups)}
    save_plan(cp.plan, plan_json(groups, header, {**result, **totals, "seconds": seconds}))
    return {"plan": cp.plan, "result": result, "calibration": calibration, "seconds": seconds}


def _ort_record() -> dict[str, Any]:
    """ONNX Runtime's version and the devices this process's sessions ran the ranges and the sweep on."""
    import onnxruntime as ort

    from t2vtrt.runtime.backends.onnxruntime import devices_used

    return {"version": ort.__version__, "devices": devices_used()}


def _quantize_all(
    paths: ArtifactPaths,
    cp: CalibPaths,
    out: dict[str, Path],
    act_scales: dict[str, float],
    excluded: list[str],
    u8_ranges: dict[str, list[float]],
    budget: Budget,
) -> None:
    """The two explicit-quantization graphs and the U8S8 graph, in two child processes (side by side for small graphs)."""
    calls = [
        Call(
            "t2vtrt.calibration.placement:write_quantized_graphs",
            {
                "source": str(cp.source),
                "int8_qdq": str(out["int8-qdq"]),
                "int8": str(out["int8"]),
                "nodes_to_exclude": excluded,
                "scales": act_scales,
                "data": str(cp.data),
                "crops": tool_crops(paths, budget),
            },
            paths.root / "logs" / "placement-quantize.log",
        ),
        Call(
            "t2vtrt.calibration.u8s8:write_u8s8_graph",
            {"source": str(cp.source), "output": str(out["u8s8"]), "ranges": u8_ranges, "nodes_to_exclude": excluded},
            paths.root / "logs" / "u8s8.log",
        ),
    ]
    if needs_external_data(cp.source):  # each child holds gigabytes of weights: one at a time
        for call in calls:
            run_isolated(call)
    else:
        run_isolated(*calls)


def _gate(paths: ArtifactPaths, out: dict[str, Path], evals: Capture, budget: Budget, limits: Thresholds, on_event: Event | None) -> list[Verdict]:
    """Judge the ONNX-Runtime-runnable variants (never the FP16 Q/DQ graph: ORT CPU truncates FP16 in QuantizeLinear)."""
    reference = run_first_output(session(CalibPaths(paths).source), evals.feeds)
    generation = budget.generation()
    cases = reference_videos(paths, load_prompts("eval", budget.video_prompts, budget.prompt_file("eval")), budget.video_seeds, generation)
    _emit(on_event, "gate", 1, 3)
    verdicts = []
    for index, (variant, precision) in enumerate((("int8-qdq", "int8-qdq"), ("u8s8", "int8"))):
        verdicts.append(judge(paths, variant, out[variant], precision, evals.feeds, reference, cases, limits, budget.adherence, generation))
        _emit(on_event, "gate", index + 2, 3)
    return verdicts


def _plan_budget(plan: dict[str, Any]) -> Budget | None:
    """The budget the calibrate stage ran with, as its plan records it (None for a plan without one)."""
    return budget_from_json(plan["budget"]) if isinstance(plan.get("budget"), dict) else None


def _install(files: list[Path], onnx_dir: Path) -> None:
    """Move the gated graphs (external data first) into onnx/."""
    for path in sorted(files, key=lambda p: p.suffix == ".onnx"):
        os.replace(path, onnx_dir / path.name)


def run_quantize(
    paths: ArtifactPaths, cache_file: Path | None = None, gate: bool = True, budget: Budget | None = None, on_event: Event | None = None
) -> dict[str, Any]:
    """The quantize stage: three INT8 graphs from the plan and scales, gated, then installed together."""
    start = time.perf_counter()
    cp = CalibPaths(paths)
    name, _ = _model(paths)
    plan = load_plan(cp.plan)
    budget, limits = budget or _plan_budget(plan) or model_budget(paths), load_thresholds(name)
    check_plan_nodes(plan, {n.name for n in load_graph(cp.source).graph.node}, str(cp.source))
    excluded = fp16_nodes(plan)
    ranges, meta = load_ranges(cp.ranges)
    cache = Path(cache_file) if cache_file else cp.cache
    _, cache_scales = read_cache(cache)
    Capture.load(cp.data)  # clear errors before the slow part
    evals = Capture.load(cp.eval_data)
    method = meta.get("method", "entropy")
    u8_ranges = u8s8_ranges(ranges, method, cache_scales if cache_file else None)
    with tempfile.TemporaryDirectory(prefix=".quantize.", dir=paths.onnx_dir) as tmp:
        out = {kind: Path(tmp) / p.name for kind, p in (("int8", cp.trt_graph), ("int8-qdq", cp.cpuverify_graph), ("u8s8", cp.u8s8_graph))}
        _emit(on_event, "quantize", 0, 1)
        # A tensor the fallback-aware placement quantizes that the cache does not name gets the method's own scale.
        act_scales = {**scales(ranges, method), **cache_scales}
        _quantize_all(paths, cp, out, act_scales, excluded, u8_ranges, budget)
        _emit(on_event, "quantize", 1, 1)
        verdicts = _gate(paths, out, evals, budget, limits, on_event) if gate else []
        report = {
            "model": name,
            "limits": limits.__dict__,
            "cache": str(cache),
            "fp16_nodes": len(excluded),
            "gated": gate,
            "passed": all(v.passed for v in verdicts),
            "variants": [v.to_json() for v in verdicts],
            "graphs": {
                p.name: sha256_file(out[kind]) for kind, p in (("int8", cp.trt_graph), ("int8-qdq", cp.cpuverify_graph), ("u8s8", cp.u8s8_graph))
            },
            "seconds": round(time.perf_counter() - start, 1),
        }
        write_json(cp.gate, report)
        failed = [f"{v.variant}: {'; '.join(v.failures)}" for v in verdicts if not v.passed]
        if failed:
            raise T2VError(
                f"INT8 accuracy gate failed ({' | '.join(failed)}); nothing installed; see {cp.gate}; keep more "
                "layers in FP16 (t2vtrt calibrate --plan FILE, make PLAN=FILE) or build without INT8 (make INT8=0)"
            )
        _install([p for p in Path(tmp).iterdir() if p.is_file()], paths.onnx_dir)
    return report
