"""Our U8S8 writer against onnxruntime's quantize_static on the tiny model: the same graph, weights left on disk."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from t2vtrt.build.graphfiles import load_graph, read_array
from t2vtrt.calibration import qdq
from t2vtrt.calibration.isolate import Call, run_isolated
from t2vtrt.calibration.paths import CalibPaths
from t2vtrt.calibration.plan import fp16_nodes, load_plan
from t2vtrt.calibration.ranges import load_ranges
from t2vtrt.calibration.reader import tool_feeds
from t2vtrt.calibration.u8s8 import FLOAT_OUTPUT_OP_TYPES, OP_TYPES, activation_matmuls, u8s8_ranges


def onnxruntime_u8s8(source: str, output: str, data: str, ranges: dict[str, list[float]], nodes_to_exclude: list[str]) -> None:
    """quantize_static with the settings the U8S8 graph stands for (child process), fallback readers rewired to float."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from t2vtrt.build.graphfiles import save_graph
    from t2vtrt.calibration.qdq import unquantize_fallbacks
    from t2vtrt.calibration.reader import FeedReader

    excluded = sorted(set(nodes_to_exclude) | set(activation_matmuls(load_graph(Path(source)))))
    quantize_static(
        model_input=source,
        model_output=output,
        calibration_data_reader=FeedReader(tool_feeds(data, 1, {"sample": {2: 2}})),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=OP_TYPES,
        per_channel=True,
        reduce_range=False,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=excluded,
        calibrate_method=CalibrationMethod.MinMax,
        extra_options={
            "TensorQuantOverrides": {t: [{"rmin": np.float32(lo), "rmax": np.float32(hi)}] for t, (lo, hi) in ranges.items()},
            "ActivationSymmetric": False,
            "WeightSymmetric": True,
            "OpTypesToExcludeOutputQuantization": FLOAT_OUTPUT_OP_TYPES,
        },
    )
    model, _ = unquantize_fallbacks(load_graph(Path(output)), set(excluded))
    save_graph(model, Path(output))


def _dequantized_inputs(model: Any) -> dict[tuple[str, int], tuple[str, np.ndarray, np.ndarray, np.ndarray | None]]:
    """(reader, input index) -> (source tensor, scale, zero point, stored integer values for weights and biases)."""
    made_by, inits = qdq.producers(model), {t.name: t for t in model.graph.initializer}
    out = {}
    for node in model.graph.node:
        for index, name in enumerate(node.input):
            dq = made_by.get(name)
            if node.op_type in qdq.QDQ_OPS or dq is None or dq.op_type != "DequantizeLinear":
                continue
            scale, zero = read_array(inits[dq.input[1]]), read_array(inits[dq.input[2]])
            if dq.input[0] in inits:  # a stored integer weight or bias: compare its values
                out[(node.name, index)] = ("stored", scale, zero, read_array(inits[dq.input[0]]))
            else:
                out[(node.name, index)] = (made_by[dq.input[0]].input[0], scale, zero, None)
    return out


@pytest.fixture(scope="module")
def both(calibrated, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[dict[str, np.ndarray]]]:  # type: ignore[no-untyped-def]
    """(quantize_static's graph, ours, held-out feeds), with the plan's fallback nodes and the calibrated ranges."""
    paths, _, _ = calibrated
    cp, work = CalibPaths(paths), tmp_path_factory.mktemp("u8s8")
    ranges, meta = load_ranges(cp.ranges)
    call = {"source": str(cp.source), "ranges": u8s8_ranges(ranges, meta["method"]), "nodes_to_exclude": fp16_nodes(load_plan(cp.plan))}
    theirs, ours = work / "onnxruntime.onnx", work / "ours.onnx"
    run_isolated(
        Call(f"{__name__}:onnxruntime_u8s8", {**call, "output": str(theirs), "data": str(cp.data)}, work / "ort.log"),
        Call("t2vtrt.calibration.u8s8:write_u8s8_graph", {**call, "output": str(ours)}, work / "ours.log"),
    )
    return theirs, ours, tool_feeds(str(cp.eval_data), 2, None)


def test_same_graph_as_quantize_static(both) -> None:  # type: ignore[no-untyped-def]
    """Every dequantized input, its scale and zero point, and every stored int8 weight and int32 bias are the same."""
    theirs, ours, _ = both
    mine, ref = _dequantized_inputs(load_graph(ours)), _dequantized_inputs(load_graph(theirs))
    assert mine.keys() == ref.keys() and len(ref) > 100
    for edge, (tensor, scale, zero, stored) in ref.items():
        got = mine[edge]
        assert got[0] == tensor, edge
        assert np.array_equal(got[1], scale) and np.array_equal(got[2], zero) and got[2].dtype == zero.dtype, edge
        assert (stored is None and got[3] is None) or (np.array_equal(got[3], stored) and got[3].dtype == stored.dtype), edge
    assert {v[3].dtype for v in mine.values() if v[3] is not None} == {np.dtype(np.int8), np.dtype(np.int32)}


def test_same_outputs_as_quantize_static(both) -> None:  # type: ignore[no-untyped-def]
    """ONNX Runtime computes the same from both (its QDQ fusions see the same graph)."""
    import onnxruntime as ort

    theirs, ours, feeds = both
    outputs = []
    for path in (ours, theirs):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        outputs.append([session.run(None, feed)[0] for feed in feeds])
    for got, want in zip(*outputs):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
