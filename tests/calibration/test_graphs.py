"""Calibration's sessions over graphs whose weights stay on disk: no copy of the weights, the same outputs."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from t2vtrt.build.graphfiles import load_graph, save_graph
from t2vtrt.calibration.graphs import session


def _saved(folder: Path) -> Path:
    """x -> MatMul(w1) -> Relu -> MatMul(w2) -> y, saved with w1 and w2 (16 KiB each) in <graph>.onnx.data."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal((64, 64)).astype(np.float32), f"w{i}") for i in (1, 2)]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]), helper.make_node("MatMul", ["r", "w2"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 64])],
        weights,
    )
    folder.mkdir(parents=True, exist_ok=True)
    return save_graph(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), folder / "g.onnx", external=True)


@pytest.fixture
def no_tmpdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """TMPDIR points at a folder that does not exist: anything written there fails."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-tmpdir"))


def test_a_loaded_graph_runs_from_its_weights_folder_without_scratch_space(tmp_path: Path, no_tmpdir: None) -> None:
    """The session reads the weights where they are (TMPDIR unusable) and leaves only the graph and its data behind."""
    path = _saved(tmp_path / "onnx")
    x = np.random.default_rng(1).standard_normal((3, 64)).astype(np.float32)
    expected = session(path).run(None, {"x": x})[0]
    model = load_graph(path, inline_bytes=0)  # every tensor stays a reference into g.onnx.data
    got = session(model).run(None, {"x": x})[0]
    np.testing.assert_array_equal(got, expected)
    assert sorted(p.name for p in (tmp_path / "onnx").iterdir()) == ["g.onnx", "g.onnx.data"]


def test_weights_in_two_folders_are_copied_to_tmpdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Weights from two files in different folders cannot be read below one graph folder: the session runs on a copy."""
    first, second = load_graph(_saved(tmp_path / "a"), inline_bytes=0), load_graph(_saved(tmp_path / "b"), inline_bytes=0)
    merged = onnx.ModelProto()
    merged.CopyFrom(first)
    merged.graph.initializer[1].CopyFrom(second.graph.initializer[1])  # w1 from a/, w2 from b/
    x = np.ones((1, 64), np.float32)
    expected = session(first).run(None, {"x": x})[0]
    np.testing.assert_array_equal(session(merged).run(None, {"x": x})[0], expected)  # the same weights, read from both files
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-tmpdir"))
    with pytest.raises(FileNotFoundError):
        session(merged)
