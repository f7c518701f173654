"""split_slow_transposes: permutations ONNX Runtime copies element by element -> Reshape + fast Transposes."""

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort
import pytest

from t2vtrt.build.surgery.transposes import is_fast, plan, split_slow_transposes

# UNet3D's temporal transformer: (B,C,F,H,W) -> (B,H,W,F,C) before attention, and back after it.
INTO_TOKENS, BACK = [0, 3, 4, 2, 1], [0, 3, 4, 1, 2]


def _transpose_graph(ortc, perm: list[int], shape: list, dtype: type = np.float32) -> gs.Graph:
    """One Transpose of a graph input, its output the graph output (symbolic dims stay symbolic)."""
    x = gs.Variable("x", dtype=dtype, shape=shape)
    y = gs.Variable("y", dtype=dtype, shape=[shape[p] for p in perm])
    return ortc.graph([gs.Node("Transpose", name="t", attrs={"perm": perm}, inputs=[x], outputs=[y])], [x], [y])


def _transposes(model: onnx.ModelProto) -> list[list[int]]:
    """The perm of every Transpose in a model."""
    return [list(n.attribute[0].ints) for n in model.graph.node if n.op_type == "Transpose"]


@pytest.mark.parametrize("perm,steps", [(BACK, ["Reshape", "Transpose", "Reshape"]), (INTO_TOKENS, ["Transpose", "Reshape", "Transpose", "Reshape"])])
def test_plans_use_only_fast_transposes(perm, steps):
    planned = plan(5, perm)
    assert [s.op for s in planned] == steps
    assert all(is_fast(s.perm) for s in planned if s.op == "Transpose")


@pytest.mark.parametrize("perm", [[0, 2, 1, 3, 4], [0, 2, 3, 4, 1], [1, 0], [0, 1, 2]])
def test_fast_permutations_have_no_plan(perm):
    assert is_fast(perm) and plan(len(perm), perm) is None


@pytest.mark.parametrize("perm", [INTO_TOKENS, BACK])
@pytest.mark.parametrize("dtype", [np.float32, np.uint8])
def test_rewrite_computes_the_same_tensor_at_any_batch_and_frames(ortc, perm, dtype):
    shape = ["b", 6, "f", 4, 5] if perm == INTO_TOKENS else ["b", 4, 5, "f", 6]
    graph = _transpose_graph(ortc, perm, shape, dtype)
    before = ortc.model(graph)
    assert split_slow_transposes(graph) == 1
    after = ortc.model(graph)
    assert after.graph.output[0].name == "y" and all(is_fast(p) for p in _transposes(after))
    rng = np.random.default_rng(0)
    for b, f in [(1, 3), (2, 7)]:
        concrete = [b if d == "b" else f if d == "f" else d for d in shape]
        ortc.assert_same(before, after, {"x": (rng.random(concrete) * 200).astype(dtype)})


def test_onnxruntime_keeps_the_fast_form(ortc, tmp_path):
    """ORT's own optimizer (ORT_ENABLE_ALL) must not fold the rewrite back into the slow permutation."""
    graph = _transpose_graph(ortc, INTO_TOKENS, ["b", 6, "f", 4, 5])
    split_slow_transposes(graph)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(ortc.model(graph).SerializeToString(), options, providers=["CPUExecutionProvider"])
    perms = _transposes(onnx.load(tmp_path / "optimized.onnx"))
    assert len(perms) == 2 and all(is_fast(p) for p in perms)


@pytest.mark.parametrize(
    "perm,shape",
    [
        ([0, 2, 1, 3, 4], ["b", 6, "f", 4, 5]),  # already fast
        (BACK, ["b", "h", "w", "f", "c"]),  # merging H,W and F,C would need two unknown sizes in one Reshape
        (BACK, None),  # rank unknown
    ],
)
def test_what_cannot_be_rewritten_is_left_alone(ortc, perm, shape):
    x = gs.Variable("x", dtype=np.float32, shape=shape)
    y = gs.Variable("y", dtype=np.float32, shape=None)
    graph = ortc.graph([gs.Node("Transpose", attrs={"perm": perm}, inputs=[x], outputs=[y])], [x], [y])
    assert split_slow_transposes(graph) == 0
    assert [n.op for n in graph.nodes] == ["Transpose"]
