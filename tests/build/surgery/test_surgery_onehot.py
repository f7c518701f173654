"""onehot_to_gather."""

import numpy as np
import onnx_graphsurgeon as gs
import pytest

from t2vtrt.build.surgery.onehot import onehot_to_gather


def _onehot_graph(ortc, indices: np.ndarray, depth: int, axis: int | None = None) -> gs.Graph:
    values = gs.Variable("values", dtype=np.int64, shape=[2])
    y = gs.Variable("y", dtype=np.int64, shape=[None] * (indices.ndim + 1))
    attrs = {} if axis is None else {"axis": axis}
    node = gs.Node(
        "OneHot", attrs=attrs, outputs=[y], inputs=[gs.Constant("indices", indices), gs.Constant("depth", np.array(depth, np.int64)), values]
    )
    return ortc.graph([node], [values], [y])


def test_exporter_repeat_interleave_pattern(ortc):
    # OneHot([1], 3, [1, frames]) -> Tile repeats [1, frames, 1], as the UNet3D export builds them.
    graph = _onehot_graph(ortc, np.array([1], np.int64), 3)
    before = ortc.model(graph)
    assert onehot_to_gather(graph) == 1
    assert [n.op for n in graph.nodes] == ["Gather"]
    feeds = {"values": np.array([1, 5], np.int64)}
    assert ortc.run(ortc.model(graph), feeds)[0].tolist() == [[1, 5, 1]]
    ortc.assert_same(before, ortc.model(graph), feeds)


@pytest.mark.parametrize("axis", [0, 1, -1, -2])
def test_negative_and_out_of_range_indices_any_axis(ortc, axis):
    graph = _onehot_graph(ortc, np.array([[0, -1, 7], [2, 3, -4]], np.int64), 4, axis)
    before = ortc.model(graph)
    assert onehot_to_gather(graph) == 1
    ortc.assert_same(before, ortc.model(graph), {"values": np.array([-3, 9], np.int64)})


def test_runtime_indices_are_left_alone(ortc):
    indices = gs.Variable("indices", dtype=np.int64, shape=[1])
    values = gs.Variable("values", dtype=np.float32, shape=[2])
    y = gs.Variable("y", dtype=np.float32)
    node = gs.Node("OneHot", inputs=[indices, gs.Constant("depth", np.array(3, np.int64)), values], outputs=[y])
    graph = ortc.graph([node], [indices, values], [y])
    assert onehot_to_gather(graph) == 0
