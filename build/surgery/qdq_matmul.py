"""cpu target only: DQ(a) x DQ(W) -> MatMul -> Add(bias) -> one com.microsoft.MatMulIntegerToFloat with its bias.

Why: ONNX Runtime already runs a quantized MatMul whose output stays float as MatMulIntegerToFloat, but it
leaves the projection's bias Add behind: one more pass over every projection output (the GEGLU halves,
to_out, proj_in/out, ff.net.2), ~48 ms of a 1.4 s INT8 bench denoiser call. The kernel takes the bias
itself and adds it while it scales the integer accumulators. Same inputs as the Q/DQ graph (uint8
activations, int8 weights, per-tensor or per-column scales), so the arithmetic is the same up to float
rounding order. Not for TensorRT (no com.microsoft ops); the U8S8 graph is a cpu-target file anyway.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from ._graph import MS_DOMAIN, column_bias, const_values, import_domain, is_io, node_label, producer, sole_consumer


@dataclass
class _Match:
    """One quantized projection: the DQ nodes of its activation and weight, the MatMul, its bias Add."""

    act: gs.Node
    weight: gs.Node
    matmul: gs.Node
    add: gs.Node
    bias: gs.Tensor


def _dq(tensor: gs.Tensor) -> gs.Node | None:
    """The DequantizeLinear writing `tensor` with all three inputs given, or None."""
    node = producer(tensor)
    return node if node is not None and node.op == "DequantizeLinear" and len(node.inputs) == 3 else None


def _per_column_weight(dq: gs.Node) -> bool:
    """A constant 2-D int8/uint8 weight, scaled per tensor or per column (axis 1): what the kernel takes."""
    values, scale = const_values(dq.inputs[0]), const_values(dq.inputs[1])
    if values is None or scale is None or values.ndim != 2 or values.dtype not in (np.int8, np.uint8):
        return False
    if scale.size == 1:
        return True
    return scale.shape == (values.shape[1],) and dq.attrs.get("axis", 1) in (1, -1)


def _match(graph: gs.Graph, matmul: gs.Node) -> _Match | None:
    """The quantized projection around `matmul`, or None when any part differs from what the kernel takes."""
    act, weight = _dq(matmul.inputs[0]), _dq(matmul.inputs[1])
    if act is None or weight is None or not _per_column_weight(weight):
        return None
    a_scale = const_values(act.inputs[1])
    if a_scale is None or a_scale.size != 1 or a_scale.dtype != np.float32:
        return None
    y = matmul.outputs[0]
    add = sole_consumer(y)
    if add is None or is_io(graph, y):
        return None
    found = column_bias(add, y, weight.inputs[0].shape[1])
    if found is None or const_values(found[0]).dtype != np.float32:  # the kernel's bias is float32
        return None
    return _Match(act, weight, matmul, add, found[0])


def _fuse(graph: gs.Graph, m: _Match) -> None:
    """Replace MatMul + Add by one MatMulIntegerToFloat writing the Add's output tensor."""
    out = m.add.outputs[0]
    a, a_scale, a_zero = m.act.inputs
    b, b_scale, b_zero = m.weight.inputs
    fused = gs.Node(
        "MatMulIntegerToFloat",
        name=f"{node_label(m.matmul)}/int_to_float",
        domain=MS_DOMAIN,
        inputs=[a, b, a_scale, b_scale, a_zero, b_zero, m.bias],
        outputs=[out],
    )
    for node in (m.matmul, m.add):
        node.inputs.clear()
        node.outputs.clear()
    graph.nodes.append(fused)


def fuse_matmul_integer_bias(graph: gs.Graph) -> int:
    """Fuse quantized MatMul + bias Add into com.microsoft.MatMulIntegerToFloat (cpu target); return how many."""
    matches = [m for node in list(graph.nodes) if node.op == "MatMul" and (m := _match(graph, node))]
    for m in matches:
        _fuse(graph, m)
    if matches:
        import_domain(graph, MS_DOMAIN)
        graph.cleanup(remove_unused_graph_inputs=False).toposort()
    return len(matches)
