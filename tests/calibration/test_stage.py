"""The calibrate and quantize stages on the tiny model: graph structure, scales, the gate, bad inputs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from t2vtrt.build.graphfiles import load_graph, save_graph
from t2vtrt.calibration import qdq
from t2vtrt.calibration.cache import read_cache
from t2vtrt.calibration.capture import Capture, capture
from t2vtrt.calibration.gate import judge, load_thresholds, reference_videos
from t2vtrt.calibration.graphs import run_first_output, session
from t2vtrt.calibration.paths import CalibPaths
from t2vtrt.calibration.plan import fp16_nodes, load_plan
from t2vtrt.calibration.prompts import load_prompts
from t2vtrt.calibration.ranges import collect_ranges, load_ranges, scales
from t2vtrt.calibration.settings import load_budget
from t2vtrt.calibration.u8s8 import activation_matmuls
from t2vtrt.runtime.errors import T2VError

from .conftest import copy_artifacts, small_budget
from qdq_scales import activation_scales  # tests/support

WEIGHT_AXIS = {"Conv": 0, "MatMul": 1}  # output channels: Conv weights (Cout, Cin, ...), MatMul weights (K, N)


def _inits(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Initializers as arrays."""
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def _snapshot(root: Path) -> dict[str, float]:
    """Every file under root with its mtime (to prove nothing was written)."""
    return {str(p.relative_to(root)): p.stat().st_mtime for p in root.rglob("*") if p.is_file()}


def test_calibrated_scales_differ_from_max(calibrated) -> None:  # type: ignore[no-untyped-def]
    """On most tensors the entropy and MSE amax are not the observed max; the cache holds the budget's method (mse)."""
    paths, summary, _ = calibrated
    ranges, meta = load_ranges(CalibPaths(paths).ranges)
    assert meta["method"] == "mse" and meta["entropy_differs_from_max"] > 0.6 * len(ranges)
    _, cached = read_cache(CalibPaths(paths).cache)
    maximum = scales(ranges, "max")
    differ = sum(not np.isclose(cached[t], maximum[t], rtol=1e-4) for t in cached)
    assert differ > 0.6 * len(cached)
    recorded = json.loads(CalibPaths(paths).ranges.read_text())["tensors"]
    assert all(np.isclose(cached[t], recorded[t]["mse_amax"] / 127.0, rtol=1e-6) for t in cached)


def test_trt_graph_structure(calibrated) -> None:  # type: ignore[no-untyped-def]
    """denoiser.int8.onnx: int8 zero points of 0, per-channel weights on the output axis, FP16 elsewhere,
    no Q/DQ on an FP16-fallback node, Softmax never quantized."""
    paths, _, _ = calibrated
    cp = CalibPaths(paths)
    model, excluded = load_graph(cp.trt_graph), set(fp16_nodes(load_plan(cp.plan)))
    inits, readers = _inits(model), qdq.consumers(model)
    constants = qdq.constant_tensors(model)
    for node in (n for n in model.graph.node if n.op_type in qdq.QDQ_OPS):
        zero_point = inits[node.input[2]]
        assert zero_point.dtype == np.int8 and not zero_point.any(), node.name
        scale = inits[node.input[1]]
        if node.op_type == "DequantizeLinear" and node.input[0] not in constants:
            weight_q = next((q for q in model.graph.node if q.output and q.output[0] == node.input[0]), None)
            if weight_q is not None and weight_q.input[0] in constants:  # a weight's Q/DQ pair
                op = readers[node.output[0]][0].op_type
                axis = next(a.i for a in node.attribute if a.name == "axis")
                assert axis == WEIGHT_AXIS[op] and scale.size == inits[weight_q.input[0]].shape[axis], node.name
            else:
                assert scale.size == 1, node.name  # activations: per tensor
    assert qdq.nodes_touching_qdq(model, excluded) == []
    softmax = {n.name for n in model.graph.node if n.op_type == "Softmax"}
    assert softmax and qdq.nodes_touching_qdq(model, softmax) == []
    softmax_out = {o for n in model.graph.node if n.op_type == "Softmax" for o in n.output}
    assert not any(q.input[0] in softmax_out for q in model.graph.node if q.op_type == "QuantizeLinear")
    assert any(a.dtype == np.float16 for a in inits.values())
    assert {i.type.tensor_type.elem_type for i in (*model.graph.input, *model.graph.output)} == {onnx.TensorProto.FLOAT}


def test_cpuverify_has_the_same_scales_in_fp32(calibrated) -> None:  # type: ignore[no-untyped-def]
    """The gate's graph carries our cache's scales exactly; the TensorRT graph has them to FP16 rounding."""
    paths, _, _ = calibrated
    cp = CalibPaths(paths)
    verify, trt = load_graph(cp.cpuverify_graph), load_graph(cp.trt_graph)
    _, cached = read_cache(cp.cache)
    verify_scales, trt_scales = activation_scales(verify), activation_scales(trt)
    assert set(verify_scales) == set(trt_scales) and set(verify_scales) <= set(cached)
    assert all(verify_scales[t] == pytest.approx(cached[t], rel=1e-7) for t in verify_scales)
    assert all(trt_scales[t] == pytest.approx(cached[t], rel=1e-3) for t in trt_scales)
    assert not any(a.dtype == np.float16 for a in _inits(verify).values())


def test_u8s8_graph(calibrated) -> None:  # type: ignore[no-untyped-def]
    """uint8 activations, int8 weights read by Conv/MatMul/Gemm only, fallback nodes untouched,
    and activation scales from entropy, not MinMax."""
    paths, _, _ = calibrated
    cp = CalibPaths(paths)
    model, excluded = load_graph(cp.u8s8_graph), set(fp16_nodes(load_plan(cp.plan)))
    inits, readers = _inits(model), qdq.consumers(model)
    ranges, _ = load_ranges(cp.ranges)
    quantizers = qdq.activation_quantizers(model)
    assert quantizers and set(quantizers) <= set(ranges)
    assert all(inits[q.input[2]].dtype == np.uint8 for q in quantizers.values())
    stored = [d for d in model.graph.node if d.op_type == "DequantizeLinear" and d.input[0] in inits]
    weights = [d for d in stored if inits[d.input[0]].dtype == np.int8]
    assert weights and {inits[d.input[0]].dtype for d in stored} <= {np.dtype(np.int8), np.dtype(np.int32)}  # int32: biases
    assert {r.op_type for d in weights for r in readers[d.output[0]]} <= {"Conv", "MatMul", "Gemm"}
    assert qdq.nodes_touching_qdq(model, excluded) == []
    # MatMul outputs stay float (ORT's MatMulIntegerToFloat); Conv outputs are requantized (QLinearConv).
    linear = [n for n in model.graph.node if n.op_type in ("MatMul", "Conv") and n.name not in excluded]
    requantized = {n.op_type for n in linear if any(r.op_type == "QuantizeLinear" for r in readers[n.output[0]])}
    assert requantized == {"Conv"}
    # Attention's activation x activation MatMuls stay float (uint8 softmax probabilities are too coarse).
    attention = set(activation_matmuls(load_graph(CalibPaths(paths).source)))
    assert attention and qdq.nodes_touching_qdq(model, attention) == []
    minmax = {t: (max(r.max, 0.0) - min(r.min, 0.0)) / 255.0 for t, r in ranges.items()}
    got = activation_scales(model)
    assert sum(not np.isclose(got[t], minmax[t], rtol=1e-3) for t in got) > 0.6 * len(got)


def test_gate_passes_with_margin(calibrated) -> None:  # type: ignore[no-untyped-def]
    """Both runnable variants pass every limit in thresholds.json with room to spare."""
    paths, _, report = calibrated
    limits = load_thresholds("tiny")
    assert report["passed"] and json.loads(CalibPaths(paths).gate.read_text())["passed"]
    assert {v["variant"] for v in report["variants"]} == {"int8-qdq", "u8s8"}
    for verdict in report["variants"]:
        assert verdict["denoiser"]["rel_l2"] <= 0.9 * limits.denoiser_rel_l2_max
        assert 1 - verdict["denoiser"]["cosine"] <= 0.9 * (1 - limits.denoiser_cosine_min)
        assert verdict["video"]["psnr_db_min"] >= limits.video_psnr_min_db + 1.0


def test_quantize_gates_with_the_budget_calibration_used(calibrated) -> None:  # type: ignore[no-untyped-def]
    """The plan records calibrate's budget; quantize without one takes it (not the model's default entry)."""
    from t2vtrt.calibration.settings import budget_from_json
    from t2vtrt.calibration.stage import _plan_budget

    paths, _, _ = calibrated
    plan = load_plan(CalibPaths(paths).plan)
    assert budget_from_json(plan["budget"]) == small_budget() != load_budget("tiny")
    assert _plan_budget(plan) == small_budget() and _plan_budget({"groups": []}) is None


def test_the_plan_records_where_onnxruntime_ran(calibrated) -> None:  # type: ignore[no-untyped-def]
    """precision_plan.json names the ONNX Runtime version and the devices calibration's sessions ran on (the CPU here)."""
    import onnxruntime as ort

    paths, _, _ = calibrated
    record = load_plan(CalibPaths(paths).plan)["onnxruntime"]
    expected = ["cpu"] if "CUDAExecutionProvider" not in ort.get_available_providers() else ["cuda"]
    assert record == {"version": ort.__version__, "devices": expected}


def test_bad_plans_fail_the_gate(calibrated, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Scales x8 fail the gate the build passes; no FP16 fallback fails it without a step schedule, and needs one
    at least as long as the calibrated graph's (entropy ranges, the clipping that hurts most)."""
    from dataclasses import replace

    paths, _, report = calibrated
    cp = CalibPaths(paths)
    limits, evals = load_thresholds("tiny"), Capture.load(cp.eval_data).feeds
    reference = run_first_output(session(load_graph(cp.source)), evals)
    everything = load_graph(cp.layout)  # every quantizable node in INT8, Softmax-adjacent and norms included
    qdq.set_activation_scales(everything, scales(load_ranges(cp.ranges)[0], "entropy"))
    times8 = load_graph(cp.cpuverify_graph)
    qdq.set_activation_scales(times8, {t: s * 8 for t, s in activation_scales(times8).items()})
    cases = reference_videos(paths, load_prompts("eval", 1), (0,))
    broken = judge(paths, "scales-x8", save_graph(times8, tmp_path / "x8.onnx"), "int8-qdq", evals, reference, cases, limits)
    assert not broken.passed and any("denoiser" in f for f in broken.failures), broken.denoiser
    graph = save_graph(everything, tmp_path / "no-fallback.onnx")
    unscheduled = judge(paths, "no-fallback", graph, "int8-qdq", evals, reference, cases, replace(limits, max_float_step_share=0.0))
    assert not unscheduled.passed and unscheduled.float_steps == unscheduled.steps, unscheduled.failures
    scheduled = judge(paths, "no-fallback", graph, "int8-qdq", evals, reference, cases, limits)
    calibrated_steps = next(v["float_steps"] for v in report["variants"] if v["variant"] == "int8-qdq")
    assert scheduled.float_steps >= calibrated_steps


def test_calibration_is_deterministic(calibrated) -> None:  # type: ignore[no-untyped-def]
    """Same seed, same captured inputs; same inputs, same scales."""
    from t2vtrt.calibration.reference import onnx_pipeline

    paths, _, _ = calibrated
    cp = CalibPaths(paths)
    pipe = onnx_pipeline(paths)
    steps: list[tuple[int, int]] = []
    first = capture(pipe, load_prompts("calibration", 1), 3, seed=7, on_step=lambda done, total: steps.append((done, total)))
    second = capture(pipe, load_prompts("calibration", 1), 3, seed=7)
    total = pipe.manifest.data["defaults"]["steps"]
    assert steps == [(i, total) for i in range(total + 1)]  # progress from step 0, once per sampler step
    assert first.meta == second.meta and len(first.feeds) == 3
    for a, b in zip(first.feeds, second.feeds):
        assert all(np.array_equal(a[k], b[k]) for k in a)
    source, feeds = load_graph(cp.source), Capture.load(cp.data).feeds[:4]
    tensors = list(qdq.activation_quantizers(load_graph(cp.layout)))[:40]
    one, two = (collect_ranges(source, tensors, feeds) for _ in range(2))
    assert scales(one, "entropy") == scales(two, "entropy")


def test_hand_edited_plan(calibrated, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """--plan: the hand's decisions are kept, measured and recorded (placement and ranges are reused: fast)."""
    from t2vtrt.calibration.stage import run_calibrate

    paths = copy_artifacts(calibrated[0], tmp_path)
    cp = CalibPaths(paths)
    plan = json.loads(cp.plan.read_text())
    flipped = next(g for g in plan["groups"] if g["decision"] == "int8")
    flipped["decision"] = "fp16"
    hand = tmp_path / "hand.json"
    hand.write_text(json.dumps(plan))
    summary = run_calibrate(paths, plan_file=hand, budget=small_budget())
    written = load_plan(cp.plan)
    assert written["plan_source"] == str(hand)
    assert set(flipped["nodes"]) <= set(fp16_nodes(written)) and summary["seconds"] < 30


def test_bad_inputs_write_nothing(calibrated, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Unknown method, a plan naming missing nodes, missing or empty calibration data: one line each, no files."""
    from t2vtrt.calibration.stage import run_calibrate, run_quantize

    paths = copy_artifacts(calibrated[0], tmp_path)
    cp = CalibPaths(paths)
    before = _snapshot(paths.root)
    with pytest.raises(T2VError, match="unknown calibration method 'kl'"):
        run_calibrate(paths, method="kl")
    plan = json.loads(cp.plan.read_text())
    plan["groups"][0]["nodes"].append("/model/not_a_layer/Conv")
    (tmp_path / "typo.json").write_text(json.dumps(plan))
    with pytest.raises(T2VError, match="not_a_layer"):
        run_calibrate(paths, plan_file=tmp_path / "typo.json")
    assert _snapshot(paths.root) == before
    cp.data.unlink()
    with pytest.raises(T2VError, match="denoiser.npz is missing"):
        run_quantize(paths)
    np.savez(cp.data, sample=np.zeros((0, 2)))
    with pytest.raises(T2VError, match="holds no samples"):
        run_quantize(paths)
    after = _snapshot(paths.root)
    assert {k: v for k, v in after.items() if k != "calib/denoiser.npz"} == {k: v for k, v in before.items() if k != "calib/denoiser.npz"}
    assert not list(paths.onnx_dir.glob(".quantize.*"))


def test_cli_unknown_method_is_one_line(calibrated) -> None:  # type: ignore[no-untyped-def]
    """`t2vtrt calibrate --method kl`: exit 2, one `error:` line, no traceback."""
    paths = calibrated[0]
    exe = shutil.which("t2vtrt", path=str(Path(sys.executable).parent)) or "t2vtrt"
    result = subprocess.run(
        [exe, "--quiet", "calibrate", "--model", "tiny", "--artifacts", str(paths.root.parent), "--method", "kl"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: unknown calibration method 'kl': choose one of entropy, max, mse"]


def test_cpu_target_runs_int8(calibrated, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The engines stage ships the U8S8 graph as `int8` and the signed one as `int8-qdq`; the runtime runs both."""
    from t2vtrt.build.engines.cpu import build_cpu_target
    from t2vtrt.build.compare.frames import psnr_per_frame
    from t2vtrt.runtime.pipeline import Pipeline

    paths = copy_artifacts(calibrated[0], tmp_path)
    manifest = json.loads(build_cpu_target(paths).read_text())
    assert set(manifest["components"]["denoiser"]["variants"]) == {"fp32", "int8", "int8-qdq"}
    # Each INT8 variant ships the step schedule its own gate verdict chose, falling back to the fp32 graph.
    verdicts = {v["variant"]: v for v in json.loads(CalibPaths(paths).gate.read_text())["variants"]}
    for precision, variant in (("int8", "u8s8"), ("int8-qdq", "int8-qdq")):
        shipped = manifest["components"]["denoiser"]["variants"][precision].get("schedule")
        chosen = verdicts[variant]["schedule"]
        assert (shipped is None) == (chosen is None)
        if chosen:
            assert shipped["fallback"] == "fp32" and shipped["above"] == chosen["above"]
    # The gate's own held-out case through the shipped engines (target passes, manifest schedule): the budget holds.
    prompt = load_prompts("eval", 1)[0]
    videos = {p: Pipeline.from_dir(paths.engines_dir("cpu"), precision=p)(prompt, seed=0) for p in ("fp32", "int8", "int8-qdq")}
    limits = load_thresholds("tiny")
    for precision in ("int8", "int8-qdq"):
        assert videos[precision].shape == videos["fp32"].shape
        assert min(psnr_per_frame(videos["fp32"], videos[precision])) >= limits.video_psnr_min_db, precision


def test_gated_schedule_vouches_only_for_the_gated_file(calibrated, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A schedule ships only with the very graph the gate passed; a changed graph or a failed gate is refused."""
    from t2vtrt.calibration.gate import gated_schedule

    paths = copy_artifacts(calibrated[0], tmp_path)
    cp = CalibPaths(paths)
    gated_schedule(cp.gate, cp.u8s8_graph, "fp32")  # the build's own files: accepted
    report = json.loads(cp.gate.read_text())
    report["graphs"][cp.u8s8_graph.name] = "0" * 64
    cp.gate.write_text(json.dumps(report))
    with pytest.raises(T2VError, match="is not the graph .* passed: re-run `t2vtrt quantize`"):
        gated_schedule(cp.gate, cp.u8s8_graph, "fp32")
    cp.gate.unlink()
    with pytest.raises(T2VError, match="has no gate verdict"):
        gated_schedule(cp.gate, cp.u8s8_graph, "fp32")


def _graph_worst(graph: Any, feeds: list, reference: list) -> dict[str, float]:
    """compare's graph metrics (worst over calls): rel L2, cosine, and PSNR with the reference's max as peak."""
    from t2vtrt.calibration.metrics import cosine, rel_l2

    sess = session(graph)
    rows = []
    for feed, ref in zip(feeds, reference):
        out = sess.run(None, feed)[0]
        mse = float(np.mean((out.astype(np.float64) - ref) ** 2))
        rows.append((rel_l2(out, ref), cosine(out, ref), 10 * np.log10(float(np.max(ref)) ** 2 / mse)))
    worst = np.array(rows)
    return {"rel_l2": worst[:, 0].max(), "cosine": worst[:, 1].min(), "psnr": worst[:, 2].min()}


def test_int8_graph_tolerances_fail_the_no_fallback_graph(calibrated) -> None:  # type: ignore[no-untyped-def]
    """compare's INT8 graph limits pass the calibrated graph and fail the no-fallback one on every gated metric."""
    from t2vtrt.build.compare.tolerances import GRAPH_METRICS, graph_thresholds, load_tolerances

    paths, _, _ = calibrated
    cp = CalibPaths(paths)
    feeds = Capture.load(cp.eval_data).feeds
    reference_session = session(load_graph(paths.onnx("denoiser")))
    reference = [reference_session.run(None, f)[0] for f in feeds]
    everything = load_graph(cp.layout)
    ranges, meta = load_ranges(cp.ranges)
    qdq.set_activation_scales(everything, scales(ranges, meta["method"]))
    limits = graph_thresholds(load_tolerances(), "denoiser", "int8-qdq")
    assert limits is not None and set(limits) == {"rel_l2", "cosine", "psnr"}
    bad, good = _graph_worst(everything, feeds, reference), _graph_worst(str(cp.cpuverify_graph), feeds, reference)
    for metric, limit in limits.items():
        worse = (lambda v, lim=limit: v > lim) if GRAPH_METRICS[metric] == "max" else (lambda v, lim=limit: v < lim)
        assert worse(bad[metric]), (metric, bad, limit)
        assert not worse(good[metric]), (metric, good, limit)
