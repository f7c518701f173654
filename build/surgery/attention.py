"""cpu target only: MatMul(Q, K^T) -> Softmax -> MatMul(., V) -> one com.microsoft.MultiHeadAttention.

Why: ONNX Runtime's CPU MultiHeadAttention (float32, no mask) runs MLAS flash attention, which tiles the
scores to the L2 cache and never holds the whole (batch*frames, heads, S, S) score tensor. The plain
pattern materialises it: at 16 frames of 32x32 latents one spatial self-attention writes 1 GiB of scores,
and on the bench model that node alone took 4.5 s of an 11 s first call (1 thread; 0.14 s once warm).
Not for the TensorRT target: its ONNX parser has no com.microsoft ops (and fuses the plain pattern itself).

The exporter writes attention as Q and K already scaled (by Mul) in BNSH / BNHS layout; the fused node
takes them as they are (scale=1) after a Transpose+Reshape to (B, S, N*H), which ONNX Runtime's transpose
optimizer cancels against the exporter's own Transposes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from ._graph import MS_DOMAIN, import_domain, producer, sole_consumer


@dataclass
class _Match:
    """One attention: scaled query (B,N,S,H), scaled transposed key (B,N,H,L), value (B,N,L,Hv), output."""

    query: gs.Tensor
    key_t: gs.Tensor
    value: gs.Tensor
    out: gs.Tensor
    heads: int
    head_size: int
    value_head_size: int
    nodes: tuple[gs.Node, gs.Node, gs.Node]


def _static(shape: object, *axes: int) -> list[int] | None:
    """The given axes of a rank-4 shape when all of them are known integers."""
    if not isinstance(shape, (list, tuple)) or len(shape) != 4:
        return None
    values = [shape[a] for a in axes]
    return values if all(isinstance(v, int) and v > 0 for v in values) else None


def _is_float32(*tensors: gs.Tensor) -> bool:
    """Every tensor is float32 (the CPU kernel's only type); unknown dtypes do not match."""
    return all(t.dtype is not None and np.dtype(t.dtype) == np.float32 for t in tensors)


def _match(softmax: gs.Node, graph_outputs: list[gs.Tensor]) -> _Match | None:
    """The attention around `softmax`, or None when the pattern (or what the kernel supports) differs."""
    if softmax.attrs.get("axis", -1) not in (-1, 3):
        return None
    scores = producer(softmax.inputs[0])
    weigh = sole_consumer(softmax.outputs[0])
    if scores is None or scores.op != "MatMul" or sole_consumer(scores.outputs[0]) is not softmax:
        return None
    if weigh is None or weigh.op != "MatMul" or weigh.inputs[0] is not softmax.outputs[0]:
        return None
    if any(t is softmax.inputs[0] or t is softmax.outputs[0] for t in graph_outputs):
        return None  # the scores or probabilities are read outside: they must still be computed
    query, key_t = scores.inputs
    value, out = weigh.inputs[1], weigh.outputs[0]
    q, k, v = _static(query.shape, 1, 3), _static(key_t.shape, 1, 2), _static(value.shape, 1, 3)
    if q is None or k is None or v is None or not (q == k and q[0] == v[0]) or not _is_float32(query, key_t, value):
        return None
    return _Match(query, key_t, value, out, q[0], q[1], v[1], (scores, softmax, weigh))


def _to_bsd(graph: gs.Graph, tensor: gs.Tensor, perm: list[int], width: int, tag: str) -> gs.Variable:
    """Transpose a rank-4 tensor to (B, S, N, H) and flatten the heads: (B, S, N*H)."""
    moved = graph.layer(op="Transpose", name=f"{tag}/transpose", inputs=[tensor], outputs=[f"{tag}/bsnh"], attrs={"perm": perm})[0]
    shape = gs.Constant(f"{tag}/bsd_shape", np.array([0, 0, width], dtype=np.int64))
    return graph.layer(op="Reshape", name=f"{tag}/reshape", inputs=[moved, shape], outputs=[f"{tag}/bsd"])[0]


def _rewrite(graph: gs.Graph, m: _Match) -> None:
    """Replace the three nodes of `m` with MultiHeadAttention, keeping the output tensor (BNSH) as it was."""
    tag = m.nodes[1].name or f"attention_{id(m.nodes[1])}"
    query = _to_bsd(graph, m.query, [0, 2, 1, 3], m.heads * m.head_size, f"{tag}/q")
    key = _to_bsd(graph, m.key_t, [0, 3, 1, 2], m.heads * m.head_size, f"{tag}/k")
    value = _to_bsd(graph, m.value, [0, 2, 1, 3], m.heads * m.value_head_size, f"{tag}/v")
    fused = graph.layer(
        op="MultiHeadAttention",
        name=f"{tag}/mha",
        domain=MS_DOMAIN,
        inputs=[query, key, value],
        outputs=[f"{tag}/mha_out"],
        attrs={"num_heads": m.heads, "scale": 1.0},
    )[0]
    shape = gs.Constant(f"{tag}/bnsh_shape", np.array([0, 0, m.heads, m.value_head_size], dtype=np.int64))
    split = graph.layer(op="Reshape", name=f"{tag}/split_heads", inputs=[fused, shape], outputs=[f"{tag}/bsnh_out"])[0]
    for node in m.nodes:
        node.outputs.clear()
    graph.layer(op="Transpose", name=f"{tag}/to_bnsh", inputs=[split], outputs=[m.out], attrs={"perm": [0, 2, 1, 3]})


def fuse_attention_ort(graph: gs.Graph) -> int:
    """Fuse float32 MatMul->Softmax->MatMul attention into com.microsoft.MultiHeadAttention (ONNX Runtime only)."""
    matches = [m for m in (_match(n, graph.outputs) for n in list(graph.nodes) if n.op == "Softmax") if m is not None]
    for m in matches:
        _rewrite(graph, m)
    if matches:
        import_domain(graph, MS_DOMAIN)
        graph.cleanup().toposort()
    return len(matches)
