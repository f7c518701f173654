"""Fold a constant scalar Mul that follows a projection into the projection's weight.

Why: the exporter scales attention's query and key by head_size^-1/4 *after* projecting and splitting heads:
MatMul(x, W) -> Reshape -> Transpose -> Mul(s). That Mul is a full pass over each Q and K tensor (42
attentions x 2 on the bench denoiser, ~20 ms of a 1.4 s INT8 call); MatMul(x, W*s) gives the same tensor
(Reshape and Transpose move elements, they do not change them) with no pass at all. Plain ONNX, any target.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ._graph import bypass, const_values, producer, sole_consumer

# Ops between the projection and the Mul that only move elements, so a scalar factor commutes with them.
_MOVERS = ("Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten")


def _scalar(mul: gs.Node) -> tuple[gs.Tensor, float] | None:
    """The Mul's non-constant input and its constant one-element factor, or None."""
    for data, factor in ((mul.inputs[0], mul.inputs[1]), (mul.inputs[1], mul.inputs[0])):
        values = const_values(factor)
        if values is not None and values.size == 1 and const_values(data) is None:
            return data, float(values.reshape(-1)[0])
    return None


def _projection(tensor: gs.Tensor) -> gs.Node | None:
    """The MatMul(x, constant 2-D weight) whose output reaches `tensor` only through element movers, each read once."""
    node = producer(tensor)
    while node is not None and node.op in _MOVERS and sole_consumer(node.outputs[0]) is not None:
        node = producer(node.inputs[0])
    if node is None or node.op != "MatMul" or sole_consumer(node.outputs[0]) is None:
        return None
    weight = const_values(node.inputs[1])
    return node if weight is not None and weight.ndim == 2 and weight.dtype in (np.float32, np.float16) else None


def fold_scale_into_weights(graph: gs.Graph) -> int:
    """Fold Mul(reshaped/transposed MatMul(x, W), scalar s) into MatMul(x, W*s); return how many Muls went."""
    folded = 0
    scaled_weights: dict[tuple[str, float], gs.Constant] = {}
    for mul in [n for n in graph.nodes if n.op == "Mul" and len(n.inputs) == 2]:
        found = _scalar(mul)
        matmul = _projection(found[0]) if found else None
        if matmul is None or sole_consumer(found[0]) is not mul:
            continue
        if mul.inputs[0] is not found[0]:  # bypass() passes input 0 through
            factor = mul.inputs[0]
            mul.inputs.clear()
            mul.inputs.extend([found[0], factor])
        weight = matmul.inputs[1]
        # A new constant (the weight may be tied to a projection that is not scaled), one per weight and factor.
        key = (weight.name, found[1])
        if key not in scaled_weights:
            values = (weight.values * np.asarray(found[1], dtype=weight.values.dtype)).astype(weight.values.dtype)
            earlier = sum(name == weight.name for name, _ in scaled_weights)  # same weight, another factor
            scaled_weights[key] = gs.Constant(f"{weight.name}.scaled{earlier or ''}", values)
        matmul.inputs[1] = scaled_weights[key]
        if bypass(graph, mul):
            folded += 1
        else:
            matmul.inputs[1] = weight
    if folded:
        graph.cleanup().toposort()
    return folded
