"""Our Q/DQ placement against ModelOpt's own INT8 quantize() on the tiny model: the same graph, weights left on disk."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from t2vtrt.build.graphfiles import load_graph, read_array
from t2vtrt.calibration import qdq
from t2vtrt.calibration.isolate import Call, run_isolated
from t2vtrt.calibration.paths import CalibPaths
from t2vtrt.calibration.placement import weight_scale
from t2vtrt.calibration.reader import tool_feeds
from t2vtrt.calibration.stage import tool_crops

from .conftest import small_budget


def modelopt_layout(source: str, output: str, data: str, crops: dict[str, dict[int, int]]) -> None:
    """ModelOpt's INT8 PTQ (max calibration, FP32 elsewhere), the way the calibrate stage used to call it (child process)."""
    from modelopt.onnx.quantization import quantize

    from t2vtrt.calibration.reader import FeedReader

    quantize(
        onnx_path=source,
        quantize_mode="int8",
        calibration_method="max",
        calibration_data_reader=FeedReader(tool_feeds(data, 2, crops)),
        calibration_eps=["cpu"],
        high_precision_dtype="fp32",
        output_path=output,
        log_level="WARNING",
    )


def _place(paths: Any, out: Path, exclude: list[str], scales: dict[str, float] | None = None) -> Any:
    """Our placement of the model's denoiser into `out` (in a child, as the stages run it); the graph."""
    cp = CalibPaths(paths)
    call = {"source": str(cp.source), "output": str(out), "data": str(cp.data), "crops": tool_crops(paths, small_budget())}
    run_isolated(
        Call("t2vtrt.calibration.placement:write_qdq_graph", {**call, "nodes_to_exclude": exclude, "scales": scales}, out.with_suffix(".log"))
    )
    return load_graph(out)


def _original(name: str, inits: set[str]) -> str:
    """onnxruntime gives each extra reader of a shared weight its own copy, `<weight>_<n>`: the weight's own name."""
    base, _, suffix = name.rpartition("_")
    return base if name not in inits and suffix.isdigit() and base in inits else name


SOURCE_INITS: set[str] = set()  # the source graph's initializer names (set by the fixture)


def _edges(model: Any) -> set[tuple[str, int, str]]:
    """(reader, input index, quantized tensor) of every input that reads a dequantized tensor."""
    made_by = qdq.producers(model)
    out = set()
    for node in model.graph.node:
        for index, name in enumerate(node.input):
            dq = made_by.get(name)
            if node.op_type not in qdq.QDQ_OPS and dq is not None and dq.op_type == "DequantizeLinear":
                out.add((node.name, index, _original(made_by[dq.input[0]].input[0], SOURCE_INITS)))
    return out


def _scales(model: Any) -> dict[str, np.ndarray]:
    """Quantized tensor -> its scale."""
    inits = {t.name: t for t in model.graph.initializer}
    return {_original(q.input[0], SOURCE_INITS): read_array(inits[q.input[1]]) for q in model.graph.node if q.op_type == "QuantizeLinear"}


@pytest.fixture(scope="module")
def both(calibrated, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any, Path, list[dict[str, np.ndarray]]]:  # type: ignore[no-untyped-def]
    """(ModelOpt's graph, ours with ModelOpt's activation scales, our file, held-out feeds)."""
    paths, _, _ = calibrated
    cp, work = CalibPaths(paths), tmp_path_factory.mktemp("placement")
    crops = tool_crops(paths, small_budget())
    theirs_path, ours_path = work / "modelopt.onnx", work / "ours.onnx"
    SOURCE_INITS.update(t.name for t in load_graph(cp.source).graph.initializer)
    shutil.copyfile(cp.source, work / "source.onnx")  # ModelOpt rewrites its input file in place
    tool = {"source": str(work / "source.onnx"), "output": str(theirs_path), "data": str(cp.data), "crops": crops}
    run_isolated(Call(f"{__name__}:modelopt_layout", tool, work / "modelopt.log"))
    theirs = load_graph(theirs_path)
    activation = {t: float(s) for t, s in _scales(theirs).items() if t in qdq.activation_quantizers(theirs)}
    return theirs, _place(paths, ours_path, [], activation), ours_path, tool_feeds(str(cp.eval_data), 2, None)


def test_same_quantized_inputs_as_modelopt(both) -> None:  # type: ignore[no-untyped-def]
    """Every reader input ModelOpt quantizes, and no other: Conv/MatMul/Gemm, residual Adds, Conv->LayerNorm."""
    theirs, ours, _, _ = both
    assert _edges(ours) == _edges(theirs)
    assert {n.op_type for n in ours.graph.node if n.name in {e[0] for e in _edges(ours)}} >= {"Conv", "MatMul", "Gemm", "Add"}


def test_same_scales_and_outputs_as_modelopt(both) -> None:  # type: ignore[no-untyped-def]
    """Per-channel weight scales equal ModelOpt's; with its activation scales the two graphs compute the same."""
    import onnxruntime as ort

    theirs, ours, ours_path, feeds = both
    mine, ref = _scales(ours), _scales(theirs)
    assert mine.keys() == ref.keys()
    assert all(np.array_equal(mine[t], ref[t]) for t in ref)
    run = {}
    for name, model in (("ours", ours_path), ("theirs", theirs)):
        session = ort.InferenceSession(str(model) if isinstance(model, Path) else model.SerializeToString(), providers=["CPUExecutionProvider"])
        run[name] = [session.run(None, feed)[0] for feed in feeds]
    for got, want in zip(run["ours"], run["theirs"]):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_fallback_nodes_read_float(calibrated, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """An excluded node that shared a Q/DQ pair with others reads no dequantized tensor; the rest stays quantized."""
    paths, _, _ = calibrated
    cp = CalibPaths(paths)
    layout = load_graph(cp.layout)
    shared = next(t for t, readers in qdq.consumers(layout).items() if t.endswith("_DequantizeLinear_Output") and len(readers) > 1)
    excluded = qdq.consumers(layout)[shared][0].name
    model = _place(paths, tmp_path / "excluded.onnx", [excluded])
    assert qdq.nodes_touching_qdq(model, {excluded}) == []
    assert qdq.quantized_nodes(model)


def test_weight_scale_per_channel_and_zero() -> None:
    """|max| / 127 along the output axis; an all-zero channel gets 1.0 (a zero scale is invalid)."""
    weights = np.array([[1.0, -254.0, 0.0], [-2.0, 127.0, 0.0]], dtype=np.float32)
    np.testing.assert_array_equal(weight_scale(weights, 1), np.array([2.0 / 127, 2.0, 1.0], dtype=np.float32))
    assert weight_scale(weights, None) == pytest.approx(2.0)


def selection(source: str, data: str) -> dict[str, list[tuple[str, int]]]:
    """select_tensors on the graph at `source` (in a child: ModelOpt's setup patches onnxruntime)."""
    from t2vtrt.calibration.placement import select_tensors

    return select_tensors(load_graph(Path(source)), Path(source), tool_feeds(data, 1, {"sample": {2: 2}})[0])


def test_weights_on_disk_give_the_same_selection(calibrated, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A graph whose weights stay in its .onnx.data file (as at real size) is placed as the same graph held in memory."""
    from t2vtrt.build.graphfiles import data_path, save_graph

    paths, _, _ = calibrated
    source = CalibPaths(paths).source
    external = save_graph(load_graph(source), tmp_path / "external.onnx", external=True)
    assert data_path(external).stat().st_size > 1 << 20
    data = str(CalibPaths(paths).data)
    calls = [Call(f"{__name__}:selection", {"source": str(path), "data": data}, tmp_path / f"{path.stem}.log") for path in (source, external)]
    inline, on_disk = run_isolated(*calls)
    assert on_disk == inline and len(inline) > 100
