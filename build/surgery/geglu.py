"""GEGLU projection: MatMul(x, W[C, 2I]) -> Add(b[2I]) -> Slices of the last axis -> one MatMul+Add per Slice.

Why: diffusers' GEGLU feed-forward (`hidden, gate = proj(x).chunk(2, dim=-1)`) exports as one projection
to 2I columns followed by two Slices of the last axis. ONNX Runtime turns the Slice pair into a Split that
copies the whole projected tensor (e.g. 32x1024x512 float32): 70 ms per denoiser call on the bench model
(3.4 % of the call). Two MatMuls with the weight's column halves (and the bias halves) compute the same
two tensors with no copy. Plain ONNX ops, so any runtime reads the result.

It needs the Slice parameters as constants: the exporter computes them from Shape(...), so run it after
fold_constants. Each Slice output keeps its tensor (and name): its readers are not touched.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from ._graph import column_bias, const_values, is_io, node_label, sole_consumer


@dataclass
class _Match:
    """One projection: x @ weight + bias, read only by Slices that each take columns [start, end)."""

    matmul: gs.Node
    add: gs.Node
    x: gs.Tensor
    weight: gs.Constant
    bias: gs.Constant
    bias_first: bool
    slices: list[tuple[gs.Node, int, int]]


def _optional_input(node: gs.Node, index: int) -> gs.Tensor | None:
    """The node's input at `index`, or None when it is left out (missing or the empty name)."""
    if index >= len(node.inputs) or not node.inputs[index].name:
        return None
    return node.inputs[index]


def _single_int(tensor: gs.Tensor | None) -> int | None:
    """The value of a constant holding exactly one integer, or None."""
    values = const_values(tensor) if tensor is not None else None
    if values is None or values.size != 1 or not np.issubdtype(values.dtype, np.integer):
        return None
    return int(values.reshape(-1)[0])


def _clamp(index: int, dim: int) -> int:
    """A Slice start or end (step 1) as ONNX reads it: negative counts from the end, clamped to [0, dim]."""
    return min(max(index + dim if index < 0 else index, 0), dim)


def _rank(add_out: gs.Tensor, x: gs.Tensor) -> int | None:
    """The rank of the projection's output when known (from its own shape, or from x: MatMul keeps it)."""
    if add_out.shape is not None:
        return len(add_out.shape)
    return max(len(x.shape), 1) if x.shape is not None else None


def _is_last_axis(axis: int, rank: int | None) -> bool:
    """Whether a Slice axis is the last one of a rank-`rank` tensor (-1 always is)."""
    if axis == -1:
        return True
    return rank is not None and -rank <= axis < rank and axis % rank == rank - 1


def _column_range(node: gs.Node, data: gs.Tensor, width: int, rank: int | None) -> tuple[int, int] | None:
    """The columns [start, end) that a Slice takes from the last axis of `data`, or None if it does more."""
    if node.op != "Slice" or len(node.inputs) < 3 or node.inputs[0] is not data or len(node.outputs) != 1:
        return None
    start, end = _single_int(node.inputs[1]), _single_int(node.inputs[2])
    axes, steps = _optional_input(node, 3), _optional_input(node, 4)
    axis = 0 if axes is None else _single_int(axes)
    if start is None or end is None or axis is None:
        return None
    if (steps is not None and _single_int(steps) != 1) or not _is_last_axis(axis, rank):
        return None
    first, last = _clamp(start, width), _clamp(end, width)
    return (first, last) if first < last else None


def _match(graph: gs.Graph, matmul: gs.Node) -> _Match | None:
    """The GEGLU-style projection starting at `matmul`, or None when any part of the pattern differs."""
    if len(matmul.inputs) != 2 or len(matmul.outputs) != 1:
        return None
    x, weight = matmul.inputs
    values = const_values(weight)
    mm_out = matmul.outputs[0]
    if values is None or values.ndim != 2 or is_io(graph, mm_out):
        return None
    width = values.shape[1]
    add = sole_consumer(mm_out)
    found = column_bias(add, mm_out, width) if add is not None else None
    if found is None or is_io(graph, add.outputs[0]) or not add.outputs[0].outputs:
        return None
    add_out, rank = add.outputs[0], _rank(add.outputs[0], x)
    slices = []
    for reader in add_out.outputs:
        columns = _column_range(reader, add_out, width, rank)
        if columns is None:
            return None
        slices.append((reader, *columns))
    return _Match(matmul, add, x, weight, found[0], found[1], slices)


def _columns(cache: dict, tensor: gs.Constant, start: int, end: int) -> gs.Constant:
    """The constant holding columns [start, end) of `tensor`'s last axis (one per name and range)."""
    key = (tensor.name, start, end)
    if key not in cache:
        part = tensor.values[..., start:end].copy()  # C order
        cache[key] = gs.Constant(f"{tensor.name}.cols{start}_{end}", part)
    return cache[key]


def _rewrite(graph: gs.Graph, m: _Match, cache: dict) -> None:
    """Replace the projection and its Slices by one MatMul+Add per Slice, writing each Slice's own output."""
    repeats: dict[tuple[int, int], int] = {}
    for node, start, end in m.slices:
        out = node.outputs[0]
        node.inputs.clear()
        node.outputs.clear()
        seen = repeats[start, end] = repeats.get((start, end), -1) + 1  # two Slices of one range: unique names
        tag = f"cols{start}_{end}" + (f"_{seen}" if seen else "")
        part = gs.Variable(f"{m.matmul.outputs[0].name}.{tag}", dtype=out.dtype, shape=None if out.shape is None else list(out.shape))
        graph.layer(op="MatMul", name=f"{node_label(m.matmul)}/{tag}", inputs=[m.x, _columns(cache, m.weight, start, end)], outputs=[part])
        bias = _columns(cache, m.bias, start, end)
        graph.layer(op="Add", name=f"{node_label(m.add)}/{tag}", inputs=[bias, part] if m.bias_first else [part, bias], outputs=[out])
    for node in (m.add, m.matmul):
        node.inputs.clear()
        node.outputs.clear()


def split_geglu(graph: gs.Graph) -> int:
    """Split MatMul+Add projections read only by last-axis Slices (GEGLU) into one MatMul+Add per Slice."""
    matches = [m for node in list(graph.nodes) if node.op == "MatMul" and (m := _match(graph, node))]
    cache: dict = {}
    for m in matches:
        _rewrite(graph, m, cache)
    if matches:
        graph.cleanup(remove_unused_graph_inputs=False).toposort()
    return len(matches)
