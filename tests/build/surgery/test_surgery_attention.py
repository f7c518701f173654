"""fuse_attention_ort: the exporter's MatMul -> Softmax -> MatMul attention -> com.microsoft.MultiHeadAttention."""

import numpy as np
import onnx_graphsurgeon as gs
import pytest

from t2vtrt.build.surgery.attention import fuse_attention_ort

HEADS, HEAD = 2, 4


def _attention_graph(ortc, heads: int | None = HEADS, mask: bool = False, axis: int = -1, dtype: type = np.float32) -> gs.Graph:
    """The exporter's pattern: Q and K^T each scaled by H^-1/4, scores, softmax, times V (dynamic B, S, L)."""
    q = gs.Variable("q", dtype=dtype, shape=["b", heads, "s", HEAD])
    k_t = gs.Variable("k_t", dtype=dtype, shape=["b", heads, HEAD, "l"])
    v = gs.Variable("v", dtype=dtype, shape=["b", heads, "l", HEAD])
    out = gs.Variable("out", dtype=dtype, shape=["b", heads, "s", HEAD])
    scale = gs.Constant("scale", np.array(HEAD**-0.25, dtype=dtype))
    qs, ks, scores, probs = (gs.Variable(n, dtype=dtype, shape=None) for n in ("qs", "ks", "scores", "probs"))
    nodes = [
        gs.Node("Mul", inputs=[q, scale], outputs=[qs]),
        gs.Node("Mul", inputs=[k_t, scale], outputs=[ks]),
        gs.Node("MatMul", inputs=[qs, ks], outputs=[scores]),
    ]
    qs.shape, ks.shape = q.shape, k_t.shape
    scores.shape = ["b", heads, "s", "l"]
    inputs = [q, k_t, v]
    if mask:
        bias = gs.Variable("bias", dtype=dtype, shape=["b", heads, "s", "l"])
        masked = gs.Variable("masked", dtype=dtype, shape=scores.shape)
        nodes.append(gs.Node("Add", inputs=[scores, bias], outputs=[masked]))
        inputs.append(bias)
        scores = masked
    probs.shape = scores.shape
    nodes += [
        gs.Node("Softmax", name="attn/Softmax", attrs={"axis": axis}, inputs=[scores], outputs=[probs]),
        gs.Node("MatMul", inputs=[probs, v], outputs=[out]),
    ]
    return ortc.graph(nodes, inputs, [out])


def _feeds(s: int = 6, l: int = 5, batch: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "q": rng.standard_normal((batch, HEADS, s, HEAD), dtype=np.float32),
        "k_t": rng.standard_normal((batch, HEADS, HEAD, l), dtype=np.float32),
        "v": rng.standard_normal((batch, HEADS, l, HEAD), dtype=np.float32),
    }


@pytest.mark.parametrize("s,l", [(6, 6), (6, 5)])  # self-attention, and cross-attention with L != S
def test_exporter_pattern_becomes_one_node_with_the_same_output(ortc, s, l):
    graph = _attention_graph(ortc)
    before = ortc.model(graph)
    assert fuse_attention_ort(graph) == 1
    ops = [n.op for n in graph.nodes]
    assert ops.count("MultiHeadAttention") == 1 and "Softmax" not in ops and "MatMul" not in ops
    fused = next(n for n in graph.nodes if n.op == "MultiHeadAttention")
    assert fused.domain == "com.microsoft" and fused.attrs["num_heads"] == HEADS and fused.attrs["scale"] == 1.0
    after = ortc.model(graph)
    assert {(o.domain, o.version) for o in after.opset_import} >= {("", 17), ("com.microsoft", 1)}
    ortc.assert_same(before, after, _feeds(s, l), atol=1e-5)


@pytest.mark.parametrize("variant", [{"mask": True}, {"heads": None}, {"axis": 2}, {"dtype": np.float16}])
def test_what_the_kernel_cannot_take_is_left_alone(ortc, variant):
    # An additive mask (CLIP's causal attention), unknown head count, softmax over another axis, and
    # float16 (the CPU kernel is float32 only) all keep the plain pattern.
    graph = _attention_graph(ortc, **variant)
    assert fuse_attention_ort(graph) == 0
    assert "MultiHeadAttention" not in [n.op for n in graph.nodes]


def test_a_second_use_of_the_scores_blocks_the_fusion(ortc):
    graph = _attention_graph(ortc)
    scores = next(n for n in graph.nodes if n.op == "MatMul").outputs[0]
    graph.outputs.append(scores)  # someone else reads the scores: they must still be computed
    assert fuse_attention_ort(graph) == 0
