"""Graphs whose weights stay on disk: load without them, save into one <graph>.onnx.data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort
import pytest

from t2vtrt.build import graphfiles
from t2vtrt.build.graphfiles import ALIGN, DiskValues, consolidate, import_graph, is_external, load_graph, on_disk, save_graph, spill_constants
from t2vtrt.build.surgery._graph import const_values
from t2vtrt.runtime.errors import T2VError

FEEDS = {"x": np.linspace(-1, 1, 2 * 64, dtype=np.float32).reshape(2, 64)}


def _graph() -> gs.Graph:
    """x @ w1 + b -> @ w2 -> y: two 64x64 weights (16 KB each) and a 256-byte bias."""
    rng = np.random.default_rng(0)
    x = gs.Variable("x", dtype=np.float32, shape=[2, 64])
    h, z = gs.Variable("h"), gs.Variable("z")
    y = gs.Variable("y", dtype=np.float32, shape=[2, 64])
    w1, w2 = (gs.Constant(n, rng.standard_normal((64, 64)).astype(np.float32)) for n in ("w1", "w2"))
    b = gs.Constant("b", rng.standard_normal(64).astype(np.float32))
    nodes = [
        gs.Node("MatMul", inputs=[x, w1], outputs=[h]),
        gs.Node("Add", inputs=[h, b], outputs=[z]),
        gs.Node("MatMul", inputs=[z, w2], outputs=[y]),
    ]
    return gs.Graph(nodes=nodes, inputs=[x], outputs=[y], opset=17, ir_version=8)


def _run(path: Path) -> np.ndarray:
    """The graph's output on FEEDS, in ONNX Runtime from its path (external data resolved beside it)."""
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, FEEDS)[0]


@pytest.fixture
def exporter_style(tmp_path: Path) -> Path:
    """The graph saved the way torch.onnx.export saves > 2 GB models: one file per tensor beside it."""
    path = tmp_path / "src" / "m.onnx"
    path.parent.mkdir()
    onnx.save(gs.export_onnx(_graph()), str(path), save_as_external_data=True, all_tensors_to_one_file=False, size_threshold=0)
    return path


def test_load_leaves_large_tensors_on_disk_and_inlines_small(exporter_style: Path) -> None:
    model = load_graph(exporter_style, inline_bytes=1024)
    by_name = {t.name: t for t in model.graph.initializer}
    assert is_external(by_name["w1"]) and is_external(by_name["w2"]) and not by_name["w1"].raw_data
    assert not is_external(by_name["b"]) and len(by_name["b"].raw_data) == 256
    location = {e.key: e.value for e in by_name["w1"].external_data}["location"]
    assert Path(location).is_absolute() and Path(location).parent == exporter_style.parent.resolve()


def test_save_copies_every_weight_into_one_data_file(exporter_style: Path, tmp_path: Path) -> None:
    out = consolidate(exporter_style, tmp_path / "out" / "m.onnx")
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.onnx", "m.onnx.data"]
    np.testing.assert_array_equal(_run(out), _run(exporter_style))
    saved = onnx.load(str(out), load_external_data=False)
    offsets = [int({e.key: e.value for e in t.external_data}["offset"]) for t in saved.graph.initializer if is_external(t)]
    assert len(offsets) == 2 and all(o % ALIGN == 0 for o in offsets)  # mappable by ONNX Runtime
    assert {e.key: e.value for e in saved.graph.initializer[0].external_data}["location"] == "m.onnx.data"


def test_save_in_one_file_reads_the_weights_in(exporter_style: Path, tmp_path: Path) -> None:
    out = save_graph(load_graph(exporter_style), tmp_path / "one" / "m.onnx", external=False)
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.onnx"]
    np.testing.assert_array_equal(_run(out), _run(exporter_style))


def test_probe_runs_beside_the_source_and_leaves_nothing(exporter_style: Path) -> None:
    """A probe (an edited copy, weights still on disk) sees the graph's own tensors; its file is removed after."""
    from onnx import TensorProto, helper

    probe = load_graph(exporter_style, inline_bytes=1024)
    probe.graph.node.append(helper.make_node("Shape", ["h"], ["h_shape"]))
    probe.graph.output.append(helper.make_tensor_value_info("h_shape", TensorProto.INT64, [2]))
    before = sorted(exporter_style.parent.iterdir())
    values = graphfiles.run_probe(probe, exporter_style, {**FEEDS, "unused": np.zeros(1)}, "test")
    assert values["h_shape"].tolist() == [2, 64]
    np.testing.assert_array_equal(values["y"], _run(exporter_style))
    assert sorted(exporter_style.parent.iterdir()) == before


def test_truncated_weights_are_a_one_line_error(exporter_style: Path) -> None:
    weight = exporter_style.parent / "w1"
    weight.write_bytes(weight.read_bytes()[:100])
    with pytest.raises(T2VError, match=r"weights of w1 are missing or truncated .*export it again"):
        load_graph(exporter_style)


def test_constants_are_read_from_disk_only_when_looked_at(exporter_style: Path) -> None:
    graph = import_graph(exporter_style, inline_bytes=1024)
    w1 = graph.tensors()["w1"]
    assert on_disk(w1)
    np.testing.assert_array_equal(const_values(w1), onnx.numpy_helper.to_array(onnx.load(str(exporter_style)).graph.initializer[0]))
    assert on_disk(w1)  # a look does not keep the array


def test_spilled_constants_keep_their_values(tmp_path: Path) -> None:
    graph = _graph()
    want = graph.tensors()["w1"].values.copy()
    assert spill_constants(graph, tmp_path / "spill.bin") == 2  # w1 and w2; the 256-byte bias stays in memory
    assert isinstance(graph.tensors()["w1"]._values, DiskValues)
    np.testing.assert_array_equal(graph.tensors()["w1"].values, want)
    out = save_graph(gs.export_onnx(graph), tmp_path / "s" / "m.onnx", external=True)
    assert _run(out).shape == (2, 64)


def test_save_writes_nothing_when_the_check_fails(tmp_path: Path, monkeypatch) -> None:
    def bad(*_args, **_kwargs):
        raise onnx.checker.ValidationError("broken")

    monkeypatch.setattr(graphfiles.onnx.checker, "check_model", bad)
    with pytest.raises(onnx.checker.ValidationError):
        save_graph(gs.export_onnx(_graph()), tmp_path / "f" / "m.onnx", external=True)
    assert list((tmp_path / "f").iterdir()) == []
