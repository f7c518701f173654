"""OneHot with constant indices -> Gather, which TensorRT can evaluate on shape tensors."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ._graph import const_values


def _hot_index(indices: np.ndarray, depth: int, axis: int) -> np.ndarray:
    """0/1 positions into OneHot's [off, on] values, laid out as OneHot's output."""
    idx = indices.astype(np.int64)
    idx = np.where(idx < 0, idx + depth, idx)  # ONNX: negative indices count from the end
    hot = idx[..., None] == np.arange(depth)  # out-of-range indices give an all-off row, as in ONNX
    return np.moveaxis(hot, -1, axis).astype(np.int64)


def onehot_to_gather(graph: gs.Graph) -> int:
    """Rewrite OneHot(const indices, const depth, values) as Gather(values, const 0/1 index)."""
    # The TorchScript exporter builds repeat_interleave(x, num_frames) (time embedding and text context in
    # UNet3D) as Tile(x, OneHot([1], depth, [1, frames])). Tile's repeats is a TensorRT shape tensor, and
    # TensorRT computes shape tensors only with Shape/Concat/Gather/ElementWise/Slice-style layers, not
    # OneHot; Gather with a constant index gives the same vector and keeps the whole chain shape-computable.
    changed = 0
    for node in list(graph.nodes):
        if node.op != "OneHot" or len(node.inputs) != 3:
            continue
        indices, depth = const_values(node.inputs[0]), const_values(node.inputs[1])
        if indices is None or depth is None:
            continue
        index = _hot_index(indices, int(depth.reshape(-1)[0]), int(node.attrs.get("axis", -1)))
        out = node.outputs[0]
        values = node.inputs[2]
        node.inputs.clear()
        node.outputs.clear()
        gather = gs.Node(
            "Gather",
            name=f"{node.name}/as_gather",
            attrs={"axis": 0},
            inputs=[values, gs.Constant(f"{node.name}/hot_index", index)],
            outputs=[out],
        )
        graph.nodes.append(gather)
        changed += 1
    if changed:
        graph.cleanup(remove_unused_graph_inputs=False).toposort()
    return changed
