"""fold_scale_into_weights: MatMul(x, W) -> Reshape -> Transpose -> Mul(s) becomes MatMul(x, W*s) -> Reshape -> Transpose."""

import numpy as np
import onnx_graphsurgeon as gs
import pytest

from t2vtrt.build.surgery.scales import fold_scale_into_weights

HEADS, HEAD = 2, 3


def _scaled_query(
    ortc, scale_first: bool = False, weight_input: bool = False, extra_reader: bool = False, factor: np.ndarray | None = None
) -> gs.Graph:
    """The exporter's query: project, split heads (Reshape + Transpose), scale by head_size^-1/4."""
    x = gs.Variable("x", dtype=np.float32, shape=["b", "s", HEADS * HEAD])
    rng = np.random.default_rng(0)
    w = (
        gs.Variable("w", dtype=np.float32, shape=[HEADS * HEAD, HEADS * HEAD])
        if weight_input
        else gs.Constant("w", rng.standard_normal((HEADS * HEAD, HEADS * HEAD)).astype(np.float32))
    )
    s = gs.Constant("s", np.array(HEAD**-0.25, np.float32) if factor is None else factor)
    shape = gs.Constant("shape", np.array([0, 0, HEADS, HEAD], np.int64))
    q, q4, qt = (gs.Variable(n, dtype=np.float32) for n in ("q", "q4", "qt"))
    out = gs.Variable("out", dtype=np.float32, shape=["b", HEADS, "s", HEAD])
    nodes = [
        gs.Node("MatMul", inputs=[x, w], outputs=[q]),
        gs.Node("Reshape", inputs=[q, shape], outputs=[q4]),
        gs.Node("Transpose", attrs={"perm": [0, 2, 1, 3]}, inputs=[q4], outputs=[qt]),
        gs.Node("Mul", inputs=[s, qt] if scale_first else [qt, s], outputs=[out]),
    ]
    outputs = [out]
    if extra_reader:
        other = gs.Variable("other", dtype=np.float32)
        nodes.append(gs.Node("Neg", inputs=[q4], outputs=[other]))
        outputs.append(other)
    return ortc.graph(nodes, [x] + ([w] if weight_input else []), outputs)


@pytest.mark.parametrize("scale_first", [False, True])
def test_scale_moves_into_the_weight(ortc, scale_first):
    graph = _scaled_query(ortc, scale_first=scale_first)
    before = ortc.model(graph)
    assert fold_scale_into_weights(graph) == 1
    assert [n.op for n in graph.nodes] == ["MatMul", "Reshape", "Transpose"]
    after = ortc.model(graph)
    assert after.graph.output[0].name == "out"
    x = np.random.default_rng(1).standard_normal((2, 5, HEADS * HEAD)).astype(np.float32)
    ortc.assert_same(before, after, {"x": x}, atol=1e-6)


@pytest.mark.parametrize("variant", [{"weight_input": True}, {"extra_reader": True}, {"factor": np.full((HEAD,), 0.5, np.float32)}])
def test_what_is_not_a_private_scalar_scale_is_left_alone(ortc, variant):
    """A weight computed at run time, a moved tensor someone else reads, a per-channel factor."""
    graph = _scaled_query(ortc, **variant)
    ops = [n.op for n in graph.nodes]
    assert fold_scale_into_weights(graph) == 0
    assert [n.op for n in graph.nodes] == ops


def test_a_weight_tied_to_an_unscaled_projection_keeps_its_values(ortc):
    """Q and K share one weight: both scaled (one new constant); a third, unscaled reader keeps the original."""
    rng = np.random.default_rng(0)
    x = gs.Variable("x", dtype=np.float32, shape=["b", 4])
    w = gs.Constant("w", rng.standard_normal((4, 4)).astype(np.float32))
    s = gs.Constant("s", np.array(0.5, np.float32))
    nodes, outputs = [], []
    for name, scaled in (("q", True), ("k", True), ("v", False)):
        y, out = gs.Variable(f"{name}_mm", dtype=np.float32), gs.Variable(name, dtype=np.float32, shape=["b", 4])
        nodes.append(gs.Node("MatMul", inputs=[x, w], outputs=[y if scaled else out]))
        if scaled:
            nodes.append(gs.Node("Mul", inputs=[y, s], outputs=[out]))
        outputs.append(out)
    graph = ortc.graph(nodes, [x], outputs)
    before = ortc.model(graph)
    assert fold_scale_into_weights(graph) == 2
    weights = sorted({n.inputs[1].name for n in graph.nodes if n.op == "MatMul"})
    assert weights == ["w", "w.scaled"] and "Mul" not in [n.op for n in graph.nodes]
    ortc.assert_same(before, ortc.model(graph), {"x": rng.standard_normal((3, 4)).astype(np.float32)}, atol=1e-6)
