"""split_geglu: MatMul -> Add -> last-axis Slices (diffusers' GEGLU chunk) -> one MatMul+Add per Slice."""

import numpy as np
import onnx_graphsurgeon as gs
import pytest

from t2vtrt.build.surgery import PIPELINES
from t2vtrt.build.surgery.geglu import split_geglu

C, I = 6, 4
INT64_MAX = np.iinfo(np.int64).max


def _ints(name: str, *values: int) -> gs.Constant:
    return gs.Constant(name, np.array(values, dtype=np.int64))


def _geglu_graph(ortc, const_weight: bool = True, extra_reader: bool = False, step: int | None = None, axis: int = -1) -> gs.Graph:
    """The exporter's pattern: x @ W[C, 2I] + b[2I], Slices [0:I] and [I:INT64_MAX] of the last axis, multiplied."""
    rng = np.random.default_rng(0)
    x = gs.Variable("x", dtype=np.float32, shape=["b", "s", C])
    weight_values = rng.standard_normal((C, 2 * I)).astype(np.float32)
    weight = gs.Constant("proj.weight", weight_values) if const_weight else gs.Variable("proj.weight", dtype=np.float32, shape=[C, 2 * I])
    bias = gs.Constant("proj.bias", rng.standard_normal(2 * I).astype(np.float32))
    mm, proj, hidden, gate = (gs.Variable(n, dtype=np.float32) for n in ("mm", "proj", "hidden", "gate"))
    out = gs.Variable("out", dtype=np.float32, shape=["b", "s", I])
    tail = [_ints("axes", axis)] + ([_ints("steps", step)] if step is not None else [])
    nodes = [
        gs.Node("MatMul", inputs=[x, weight], outputs=[mm]),
        gs.Node("Add", inputs=[bias, mm], outputs=[proj]),  # bias first, as the exporter writes it
        gs.Node("Slice", inputs=[proj, _ints("s0", 0), _ints("e0", I), *tail], outputs=[hidden]),
        gs.Node("Slice", inputs=[proj, _ints("s1", I), _ints("e1", INT64_MAX), *tail], outputs=[gate]),
        gs.Node("Mul", inputs=[hidden, gate], outputs=[out]),
    ]
    outputs = [out]
    if extra_reader:
        total = gs.Variable("total", dtype=np.float32)
        nodes.append(gs.Node("ReduceSum", attrs={"keepdims": 0}, inputs=[proj], outputs=[total]))
        outputs.append(total)
    inputs = [x] if const_weight else [x, weight]
    return ortc.graph(nodes, inputs, outputs)


def _feeds(batch: int, seq: int) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(batch * 10 + seq).standard_normal((batch, seq, C), dtype=np.float32)}


def test_projection_is_split_with_the_same_output(ortc):
    graph = _geglu_graph(ortc)
    before = ortc.model(graph)
    assert split_geglu(graph) == 1
    ops = [n.op for n in graph.nodes]
    assert ops.count("MatMul") == 2 and ops.count("Add") == 2 and "Slice" not in ops and "Split" not in ops
    weights = sorted(n.inputs[1].name for n in graph.nodes if n.op == "MatMul")
    assert weights == [f"proj.weight.cols0_{I}", f"proj.weight.cols{I}_{2 * I}"]
    assert {n.outputs[0].name for n in graph.nodes if n.op == "Add"} == {"hidden", "gate"}  # names kept
    after = ortc.model(graph)
    for batch, seq in [(2, 5), (1, 3)]:
        ortc.assert_same(before, after, _feeds(batch, seq), atol=1e-6)
    assert split_geglu(graph) == 0  # nothing left to split


@pytest.mark.parametrize(
    "variant",
    [
        {"const_weight": False},  # a weight computed at run time cannot be cut into constants
        {"extra_reader": True},  # the whole projection is read by something else: it must still be computed
        {"step": 2},  # every other column
        {"axis": 1},  # a slice of the sequence, not of the columns
    ],
)
def test_other_patterns_are_left_alone(ortc, op_list, variant):
    graph = _geglu_graph(ortc, **variant)
    ops = op_list(graph)
    assert split_geglu(graph) == 0
    assert op_list(graph) == ops


def test_denoiser_pipeline_splits_after_folding():
    names = PIPELINES["denoiser"]
    assert names.index("fold_constants") < names.index("onehot_to_gather") < names.index("split_geglu")
    assert names[-1] == "cleanup" and "split_geglu" not in PIPELINES["text_encoder"]
