"""cleanup and remove_identity."""

import numpy as np
import onnx_graphsurgeon as gs

from t2vtrt.build.surgery.cleanup import cleanup
from t2vtrt.build.surgery.identity import remove_identity


def _var(name: str, shape=(2, 3)) -> gs.Variable:
    return gs.Variable(name, dtype=np.float32, shape=list(shape))


def test_cleanup_drops_dead_nodes_and_sorts(ortc, op_list):
    x, h, y, dead = _var("x"), _var("h"), _var("y"), _var("dead")
    # Written out of order, plus a branch that reaches no output.
    nodes = [gs.Node("Relu", inputs=[h], outputs=[y]), gs.Node("Neg", inputs=[x], outputs=[h]), gs.Node("Abs", inputs=[x], outputs=[dead])]
    graph = ortc.graph(nodes, [x], [y])
    before = ortc.model(graph.copy().toposort())  # the checker (rightly) refuses an unsorted model
    assert cleanup(graph) == 1
    assert op_list(graph) == ["Neg", "Relu"]
    ortc.assert_same(before, ortc.model(graph), {"x": np.random.default_rng(0).standard_normal((2, 3), np.float32)})


def test_identity_between_nodes_is_removed(ortc, op_list):
    x, h, y = _var("x"), _var("h"), _var("y")
    nodes = [gs.Node("Identity", inputs=[x], outputs=[h]), gs.Node("Relu", inputs=[h], outputs=[y])]
    graph = ortc.graph(nodes, [x], [y])
    before = ortc.model(graph)
    assert remove_identity(graph) == 1
    assert op_list(graph) == ["Relu"] and graph.nodes[0].inputs[0] is x
    ortc.assert_same(before, ortc.model(graph), {"x": np.arange(6, dtype=np.float32).reshape(2, 3) - 3})


def test_identity_of_a_shared_weight_is_removed(ortc, op_list):
    x, h, y = _var("x"), _var("h"), _var("y")
    w = gs.Constant("w", np.full((2, 3), 2.0, np.float32))
    nodes = [gs.Node("Identity", inputs=[w], outputs=[h]), gs.Node("Mul", inputs=[x, h], outputs=[y])]
    graph = ortc.graph(nodes, [x], [y])
    before = ortc.model(graph)
    assert remove_identity(graph) == 1
    assert op_list(graph) == ["Mul"] and graph.nodes[0].inputs[1] is w
    ortc.assert_same(before, ortc.model(graph), {"x": np.ones((2, 3), np.float32)})


def test_identity_writing_a_graph_output_keeps_the_output_name(ortc, op_list):
    x, h, y = _var("x"), _var("h"), _var("y")
    nodes = [gs.Node("Relu", inputs=[x], outputs=[h]), gs.Node("Identity", inputs=[h], outputs=[y])]
    graph = ortc.graph(nodes, [x], [y])
    before = ortc.model(graph)
    assert remove_identity(graph) == 1
    assert op_list(graph) == ["Relu"] and graph.nodes[0].outputs[0].name == "y" and graph.outputs[0].name == "y"
    ortc.assert_same(before, ortc.model(graph), {"x": np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)})


def test_identity_from_input_to_output_stays():
    x, y = _var("x"), _var("y")
    graph = gs.Graph(nodes=[gs.Node("Identity", inputs=[x], outputs=[y])], inputs=[x], outputs=[y], opset=17)
    assert remove_identity(graph) == 0
    assert [n.op for n in graph.nodes] == ["Identity"]
