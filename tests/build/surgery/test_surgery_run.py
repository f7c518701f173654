"""run_surgery, the registry, errors and saving."""

import json

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest

from t2vtrt.build import graphfiles
from t2vtrt.build.surgery import DEFAULT_PIPELINE, PASSES, PIPELINES, get_pass, run_surgery
from t2vtrt.runtime.errors import T2VError

REPORT_KEYS = {
    "input",
    "output",
    "opset",
    "nodes_before",
    "nodes_after",
    "ops_before",
    "ops_after",
    "passes",
    "seconds",
}


@pytest.fixture
def small_model(tmp_path, ortc):
    """x -> Identity -> Cast(float) -> MatMul(w) -> y, with a 64x64 weight, saved to disk."""
    x, h, c, y = (gs.Variable(n, dtype=np.float32, shape=[2, 64]) for n in ("x", "h", "c", "y"))
    h.dtype = h.shape = c.dtype = c.shape = None
    w = gs.Constant("w", np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32))
    nodes = [
        gs.Node("Identity", inputs=[x], outputs=[h]),
        gs.Node("Cast", attrs={"to": 1}, inputs=[h], outputs=[c]),
        gs.Node("MatMul", inputs=[c, w], outputs=[y]),
    ]
    path = tmp_path / "model.onnx"
    onnx.save(ortc.model(ortc.graph(nodes, [x], [y])), str(path))
    return path


@pytest.mark.parametrize("name", sorted(PASSES))
def test_every_registered_pass_runs_alone_and_keeps_outputs(small_model, tmp_path, ortc, name):
    """Each pass, on a graph it may not apply to, reports itself under its name and leaves a model that computes the same."""
    out = tmp_path / f"{name}.onnx"
    report = run_surgery(small_model, out, [name])
    assert [p["name"] for p in report["passes"]] == [name]
    feeds = {"x": np.ones((2, 64), np.float32)}
    ortc.assert_same(onnx.load(str(small_model)), onnx.load(str(out)), feeds)


def test_every_pipeline_names_registered_passes():
    """A pipeline naming a pass that is not registered would fail only when that stage runs."""
    for names in (DEFAULT_PIPELINE, *PIPELINES.values()):
        assert [get_pass(n).name for n in names] == list(names)


def test_default_pipeline_report(small_model, tmp_path, ortc):
    out = tmp_path / "out" / "model.opt.onnx"
    report = run_surgery(small_model, out)
    assert set(report) == REPORT_KEYS
    assert [p["name"] for p in report["passes"]] == DEFAULT_PIPELINE
    assert all(set(p) == {"name", "changed", "node_delta", "seconds"} for p in report["passes"])
    assert (report["nodes_before"], report["nodes_after"]) == (3, 1)
    assert report["ops_before"] == {"Identity": 1, "Cast": 1, "MatMul": 1} and report["ops_after"] == {"MatMul": 1}
    json.dumps(report)
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.opt.onnx"]  # no temp files left behind
    feeds = {"x": np.ones((2, 64), np.float32)}
    ortc.assert_same(onnx.load(str(small_model)), onnx.load(str(out)), feeds)


def test_chosen_passes_in_order(small_model, tmp_path):
    report = run_surgery(small_model, tmp_path / "o.onnx", ["fold_casts", "remove_identity"])
    # fold_casts runs before shape inference: the Cast's input has no dtype yet, so only Identity goes.
    assert [(p["name"], p["changed"]) for p in report["passes"]] == [("fold_casts", 0), ("remove_identity", 1)]


def test_unknown_pass_fails_before_loading(tmp_path):
    with pytest.raises(T2VError, match="unknown surgery pass 'nope'"):
        run_surgery(tmp_path / "missing.onnx", tmp_path / "o.onnx", ["cleanup", "nope"])


def test_missing_input(tmp_path):
    with pytest.raises(T2VError, match="not found"):
        run_surgery(tmp_path / "missing.onnx", tmp_path / "o.onnx")


def test_invalid_input(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not a protobuf \xff\xfe")
    with pytest.raises(T2VError, match="not a readable ONNX model"):
        run_surgery(bad, tmp_path / "o.onnx")
    assert not (tmp_path / "o.onnx").exists()


def test_large_models_use_external_data_both_ways(small_model, tmp_path, monkeypatch, ortc):
    # Pretend 16 KB is "over 2 GB": the model is saved with its weights beside it, checked by path, and
    # a model saved that way loads again as an input.
    monkeypatch.setattr(graphfiles, "EXTERNAL_DATA_BYTES", 1)
    first = tmp_path / "ext" / "a.onnx"
    run_surgery(small_model, first)
    assert (first.parent / "a.onnx.data").is_file()
    second = tmp_path / "ext2" / "b.onnx"
    run_surgery(first, second, ["cleanup"])
    feeds = {"x": np.ones((2, 64), np.float32)}
    ortc.assert_same(onnx.load(str(small_model)), onnx.load(str(second)), feeds)
