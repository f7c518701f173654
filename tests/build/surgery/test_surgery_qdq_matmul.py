"""fuse_matmul_integer_bias: DQ(a) x DQ(W) -> MatMul -> Add(bias) -> com.microsoft.MatMulIntegerToFloat(..., bias)."""

import numpy as np
import onnx_graphsurgeon as gs
import pytest

from t2vtrt.build.surgery.qdq_matmul import fuse_matmul_integer_bias

K, N = 6, 4


def _quantized_projection(ortc, weight_axis: int = 1, per_tensor: bool = False, bias_shape: tuple = (N,), extra_reader: bool = False) -> gs.Graph:
    """What onnxruntime.quantization writes for a Linear: uint8 activation Q/DQ, int8 per-column weight DQ."""
    rng = np.random.default_rng(0)
    x = gs.Variable("x", dtype=np.float32, shape=["b", "s", K])
    a_scale, a_zero = gs.Constant("a_scale", np.array(0.02, np.float32)), gs.Constant("a_zero", np.array(120, np.uint8))
    w = gs.Constant("w", rng.integers(-127, 128, (K, N)).astype(np.int8))
    columns = 1 if per_tensor else (N if weight_axis == 1 else K)
    w_scale = gs.Constant("w_scale", (rng.random(columns) * 0.01 + 0.001).astype(np.float32).reshape(() if per_tensor else (columns,)))
    w_zero = gs.Constant("w_zero", np.zeros(() if per_tensor else (columns,), np.int8))
    bias = gs.Constant("bias", rng.standard_normal(bias_shape).astype(np.float32))
    q, a, wf, y = (gs.Variable(n) for n in ("q", "a", "wf", "y"))
    out = gs.Variable("out", dtype=np.float32, shape=["b", "s", N])
    nodes = [
        gs.Node("QuantizeLinear", inputs=[x, a_scale, a_zero], outputs=[q]),
        gs.Node("DequantizeLinear", inputs=[q, a_scale, a_zero], outputs=[a]),
        gs.Node("DequantizeLinear", attrs={} if per_tensor else {"axis": weight_axis}, inputs=[w, w_scale, w_zero], outputs=[wf]),
        gs.Node("MatMul", inputs=[a, wf], outputs=[y]),
        gs.Node("Add", inputs=[bias, y], outputs=[out]),
    ]
    outputs = [out]
    if extra_reader:
        y.dtype, y.shape = np.float32, ["b", "s", N]
        outputs.append(y)
    return ortc.graph(nodes, [x], outputs, opset=13)


@pytest.mark.parametrize("per_tensor", [False, True])
def test_projection_becomes_one_kernel_with_the_same_output(ortc, per_tensor):
    graph = _quantized_projection(ortc, per_tensor=per_tensor)
    before = ortc.model(graph)
    assert fuse_matmul_integer_bias(graph) == 1
    assert [n.op for n in graph.nodes] == ["QuantizeLinear", "MatMulIntegerToFloat"]
    after = ortc.model(graph)
    assert after.graph.output[0].name == "out" and {o.domain for o in after.opset_import} >= {"", "com.microsoft"}
    x = np.random.default_rng(1).standard_normal((2, 5, K)).astype(np.float32)
    ortc.assert_same(before, after, {"x": x}, atol=1e-5)


@pytest.mark.parametrize("variant", [{"weight_axis": 0}, {"bias_shape": (1, N)}, {"extra_reader": True}])
def test_what_the_kernel_cannot_take_is_left_alone(ortc, variant):
    """Per-row weight scales, a bias that is not 1-D per column, a MatMul output someone else reads."""
    graph = _quantized_projection(ortc, **variant)
    ops = [n.op for n in graph.nodes]
    assert fuse_matmul_integer_bias(graph) == 0
    assert [n.op for n in graph.nodes] == ops
