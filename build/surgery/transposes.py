"""cpu target only: rewrite Transposes that ONNX Runtime's CPU kernel runs element by element into fast ones.

Why: ONNX Runtime's Transpose has fast paths for a permutation that keeps the innermost axis in place
(it copies contiguous rows) and for one that moves a single axis (MLAS transposes), but it does not
merge axes that travel together, so UNet3D's temporal-transformer permutes, (B,C,F,H,W) -> (B,H,W,F,C)
and back, fall to a strided copy of one element at a time. Measured on this project's 2-core machine:
(2,64,16,32,32) float32, 24 ms as one Transpose, 1.4 ms as Reshape -> fast Transposes -> Reshape;
11 such nodes took 145 ms of a 1.7 s INT8 bench denoiser call.

Two rewrites, tried in order (Reshapes are free in ONNX Runtime: they alias their input):
1. merge axes that stay adjacent and in order (H,W -> HW): Reshape -> one fast Transpose -> Reshape;
2. move the axis that ends innermost to the end first (a single-axis move), then permute the rest with
   the innermost axis fixed, merged as in 1. The merge Reshape between the two also keeps ONNX Runtime's
   transpose optimizer from folding them back into the slow one.
A permutation neither rewrite can express (a Reshape needs more than one unknown dimension) is left alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import onnx_graphsurgeon as gs

from ._graph import node_label

# An axis of the original input: its index there. A dimension of an intermediate: the axes it merges.
Group = tuple[int, ...]


def moves_single_axis(perm: Sequence[int]) -> bool:
    """Whether the permutation only moves one axis (the others keep their order): one of ORT's fast paths."""
    return any(list(perm[:i]) + list(perm[i + 1 :]) == sorted(perm[:i] + perm[i + 1 :]) for i in range(len(perm)))


def keeps_inner_axis(perm: Sequence[int]) -> bool:
    """Whether the innermost axis stays innermost: ORT copies whole rows (its other fast path)."""
    return perm[-1] == len(perm) - 1


def is_fast(perm: Sequence[int]) -> bool:
    """Whether ONNX Runtime's CPU Transpose runs this permutation on a fast path."""
    return keeps_inner_axis(perm) or moves_single_axis(perm)


def runs(perm: Sequence[int]) -> list[Group]:
    """The permutation's output axes grouped into runs of consecutive input axes (they can be merged)."""
    groups: list[list[int]] = []
    for axis in perm:
        if groups and axis == groups[-1][-1] + 1:
            groups[-1].append(axis)
        else:
            groups.append([axis])
    return [tuple(g) for g in groups]


@dataclass(frozen=True)
class Step:
    """One node of the rewrite: a Reshape to `layout` or a Transpose by `perm`, giving `layout`."""

    op: str
    layout: tuple[Group, ...]
    perm: tuple[int, ...] = ()


def _merged(layout: tuple[Group, ...], perm: Sequence[int]) -> list[Step] | None:
    """Reshape -> Transpose -> (output layout) with runs merged, when that makes the Transpose fast."""
    groups = runs(perm)
    if len(groups) == len(perm):
        return None
    order = sorted(groups)
    merged_in = tuple(sum((layout[a] for a in g), ()) for g in order)
    merged_perm = tuple(order.index(g) for g in groups)
    if not is_fast(merged_perm):
        return None
    out = tuple(layout[a] for a in perm)
    return [Step("Reshape", merged_in), Step("Transpose", tuple(merged_in[i] for i in merged_perm), merged_perm), Step("Reshape", out)]


def plan(rank: int, perm: Sequence[int]) -> list[Step] | None:
    """The fast steps that compute Transpose(perm) on a rank-`rank` tensor; None when it is fast or not expressible."""
    perm = tuple(perm)
    if is_fast(perm):
        return None
    layout = tuple((a,) for a in range(rank))
    merged = _merged(layout, perm)
    if merged is not None:
        return merged
    inner = perm[-1]
    first = tuple(a for a in range(rank) if a != inner) + (inner,)
    after_first = tuple(layout[a] for a in first)
    rest = _merged(after_first, [first.index(a) for a in perm])
    return None if rest is None else [Step("Transpose", after_first, first), *rest]


def reshape_target(src: tuple[Group, ...], dst: tuple[Group, ...], dims: Sequence[object]) -> list[int] | None:
    """A Reshape `shape` input from layout `src` to `dst`: known sizes, 0 = same dim in place, one -1; else None."""
    target: list[int] = []
    for i, group in enumerate(dst):
        sizes = [dims[a] for a in group]
        if all(isinstance(s, int) and s > 0 for s in sizes):
            target.append(math.prod(sizes))  # type: ignore[arg-type]
        elif i < len(src) and src[i] == group:
            target.append(0)
        else:
            target.append(-1)
    return target if target.count(-1) <= 1 else None


def _rewrite(graph: gs.Graph, node: gs.Node, steps: list[Step], dims: Sequence[object]) -> bool:
    """Replace `node` by `steps`; False (graph untouched) when a Reshape target cannot be written."""
    layout = tuple((a,) for a in range(len(dims)))
    targets = []
    for step in steps:
        if step.op == "Reshape":
            target = reshape_target(layout, step.layout, dims)
            if target is None:
                return False
            targets.append(target)
        layout = step.layout
    source, result = node.inputs[0], node.outputs[0]
    base = node_label(node)
    node.inputs.clear()
    node.outputs.clear()
    current, shapes = source, iter(targets)
    for k, step in enumerate(steps):
        out = result if k == len(steps) - 1 else gs.Variable(f"{base}/fast_{k}", dtype=result.dtype)
        if step.op == "Reshape":
            shape = gs.Constant(f"{base}/fast_{k}_shape", np.array(next(shapes), dtype=np.int64))
            graph.nodes.append(gs.Node("Reshape", name=f"{base}/fast_{k}", inputs=[current, shape], outputs=[out]))
        else:
            graph.nodes.append(gs.Node("Transpose", name=f"{base}/fast_{k}", attrs={"perm": list(step.perm)}, inputs=[current], outputs=[out]))
        current = out
    return True


def split_slow_transposes(graph: gs.Graph) -> int:
    """Rewrite Transposes ONNX Runtime's CPU kernel runs element by element into fast ones (cpu target)."""
    changed = 0
    for node in [n for n in graph.nodes if n.op == "Transpose"]:
        shape = node.inputs[0].shape
        perm = node.attrs.get("perm")
        if shape is None or perm is None or len(perm) != len(shape):
            continue  # unknown rank, or the default reversal of an unknown rank: nothing to plan with
        steps = plan(len(shape), [int(p) for p in perm])
        if steps is not None and _rewrite(graph, node, steps, list(shape)):
            changed += 1
    if changed:
        graph.cleanup().toposort()
    return changed
