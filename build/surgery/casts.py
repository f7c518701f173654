"""Redundant Cast removal."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ._graph import bypass, np_dtype, producer, tensor_dtype


def lossless(src: np.dtype, dst: np.dtype) -> bool:
    """True when every value of `src` is exactly representable in `dst`."""
    if src == dst or src.kind == "b":
        return True
    if src.kind in "iu" and dst.kind in "iu":
        s, d = np.iinfo(src), np.iinfo(dst)
        return d.min <= s.min and d.max >= s.max
    if src.kind in "iu" and dst.kind == "f":
        magnitude_bits = np.iinfo(src).bits - (src.kind == "i")
        return magnitude_bits <= np.finfo(dst).nmant + 1
    if src.kind == "f" and dst.kind == "f":
        s, d = np.finfo(src), np.finfo(dst)
        return d.nmant >= s.nmant and d.maxexp >= s.maxexp and d.minexp <= s.minexp
    return False  # float -> int, anything -> bool, and types numpy cannot describe


def _target(node: gs.Node) -> np.dtype | None:
    """The dtype a Cast node converts to."""
    return np_dtype(onnx.helper.tensor_dtype_to_np_dtype(node.attrs["to"])) if "to" in node.attrs else None


def fold_casts(graph: gs.Graph) -> int:
    """Skip a Cast whose input comes from a lossless Cast, and remove Casts to the type a tensor already has."""
    # Seen in the tiny UNet3D after folding: 18 float32->float32 Casts before the attention MatMuls, two more
    # before Mul/Gemm in the time embedding, and 5 int64->int64->int64 pairs in head-size arithmetic. They
    # compute nothing but split patterns (MatMul+Softmax fusion, Q/DQ placement) that later tools look for.
    changed = 0
    for node in list(graph.nodes):
        if node.op != "Cast" or not node.inputs:
            continue
        first = producer(node.inputs[0])
        if first is not None and first.op == "Cast" and first.inputs:
            src, mid = tensor_dtype(first.inputs[0]), _target(first)
            if src is not None and mid is not None and lossless(src, mid):
                # Cast(Cast(x, B), C) == Cast(x, C) when x survives the trip to B unchanged.
                node.inputs[0] = first.inputs[0]
                changed += 1
        if tensor_dtype(node.inputs[0]) is not None and tensor_dtype(node.inputs[0]) == _target(node):
            changed += bypass(graph, node)
    if changed:
        graph.cleanup(remove_unused_graph_inputs=False)
    return changed
