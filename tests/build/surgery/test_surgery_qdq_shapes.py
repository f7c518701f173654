"""shapes_skip_dequantize: Shape(DequantizeLinear(q)) reads the quantized q; the DQ is left to its other readers."""

import numpy as np
import onnx_graphsurgeon as gs

from t2vtrt.build.surgery.qdq_shapes import shapes_skip_dequantize


def _qdq_graph(ortc, with_reader: bool) -> gs.Graph:
    """x -> Q -> DQ -> Shape (the output), and optionally DQ -> Relu as a second output."""
    x = gs.Variable("x", dtype=np.float32, shape=["b", 3])
    scale, zero = gs.Constant("scale", np.array(0.1, np.float32)), gs.Constant("zero", np.array(128, np.uint8))
    q, dq = gs.Variable("q", dtype=np.uint8, shape=["b", 3]), gs.Variable("dq", dtype=np.float32, shape=["b", 3])
    shape = gs.Variable("shape", dtype=np.int64, shape=[2])
    nodes = [
        gs.Node("QuantizeLinear", inputs=[x, scale, zero], outputs=[q]),
        gs.Node("DequantizeLinear", inputs=[q, scale, zero], outputs=[dq]),
        gs.Node("Shape", inputs=[dq], outputs=[shape]),
    ]
    outputs = [shape]
    if with_reader:
        relu = gs.Variable("relu", dtype=np.float32, shape=["b", 3])
        nodes.append(gs.Node("Relu", inputs=[dq], outputs=[relu]))
        outputs.append(relu)
    return ortc.graph(nodes, [x], outputs)


def test_shape_reads_the_quantized_tensor_and_unread_dq_goes(ortc):
    graph = _qdq_graph(ortc, with_reader=False)
    before = ortc.model(graph)
    assert shapes_skip_dequantize(graph) == 1
    # Not past the QuantizeLinear: a float reader of its input would block ORT's QLinearConv fusion.
    assert [n.op for n in graph.nodes] == ["QuantizeLinear", "Shape"] and graph.nodes[1].inputs[0].name == "q"
    ortc.assert_same(before, ortc.model(graph), {"x": np.ones((4, 3), np.float32)})


def test_qdq_stays_for_its_other_readers(ortc):
    graph = _qdq_graph(ortc, with_reader=True)
    assert shapes_skip_dequantize(graph) == 1
    assert sorted(n.op for n in graph.nodes) == ["DequantizeLinear", "QuantizeLinear", "Relu", "Shape"]
    assert next(n for n in graph.nodes if n.op == "Shape").inputs[0].name == "q"
    assert shapes_skip_dequantize(graph) == 0
