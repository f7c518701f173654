"""fuse_group_norm (opt-in)."""

import numpy as np
import onnx_graphsurgeon as gs
import pytest

from t2vtrt.build.surgery import DEFAULT_PIPELINE, PIPELINES
from t2vtrt.build.surgery.groupnorm import fuse_group_norm
from t2vtrt.runtime.errors import T2VError

RNG = np.random.default_rng(0)


def _exported_group_norm(ortc, shape: list, groups: int, affine: bool = True) -> gs.Graph:
    """torch GroupNorm as the TorchScript exporter writes it: Reshape, InstanceNorm, Reshape(Shape(x)), Mul, Add."""
    channels, rank = shape[1], len(shape)
    x = gs.Variable("x", dtype=np.float32, shape=["batch", *shape[1:]])
    flat, normed, dims, back = (gs.Variable(n) for n in ("flat", "normed", "dims", "back"))
    nodes = [
        gs.Node("Reshape", inputs=[x, gs.Constant("target", np.array([0, groups, -1], np.int64))], outputs=[flat]),
        gs.Node("InstanceNormalization", attrs={"epsilon": 1e-6}, outputs=[normed], inputs=[
            flat, gs.Constant("ones", np.ones(groups, np.float32)), gs.Constant("zeros", np.zeros(groups, np.float32)),
        ]),
        gs.Node("Shape", inputs=[x], outputs=[dims]),
        gs.Node("Reshape", inputs=[normed, dims], outputs=[back]),
    ]
    y = back
    if affine:
        per_channel = [channels] + [1] * (rank - 2)
        gamma = gs.Constant("gamma", RNG.standard_normal(per_channel).astype(np.float32))
        beta = gs.Constant("beta", RNG.standard_normal(per_channel).astype(np.float32))
        scaled, y = gs.Variable("scaled"), gs.Variable("y")
        nodes += [
            gs.Node("Mul", inputs=[back, gamma], outputs=[scaled]),
            gs.Node("Add", inputs=[scaled, beta], outputs=[y]),
        ]
    y.dtype, y.shape = np.float32, ["batch", *shape[1:]]
    return ortc.graph(nodes, [x], [y])


@pytest.mark.parametrize("shape", [[2, 8, 6], [2, 8, 3, 4], [1, 8, 2, 3, 4]])
def test_fuses_to_one_opset21_node(ortc, shape):
    graph = _exported_group_norm(ortc, shape, groups=4)
    before = ortc.model(graph)
    assert fuse_group_norm(graph) == 1
    assert [n.op for n in graph.nodes] == ["GroupNormalization"]
    node = graph.nodes[0]
    assert node.attrs["num_groups"] == 4 and node.inputs[1].shape == (8,) and graph.opset == 21
    ortc.assert_same(before, ortc.model(graph), {"x": RNG.standard_normal(shape).astype(np.float32)}, atol=1e-5)


def test_without_affine_uses_unit_scale(ortc):
    graph = _exported_group_norm(ortc, [2, 6, 5, 5], groups=3, affine=False)
    before = ortc.model(graph)
    assert fuse_group_norm(graph) == 1
    assert graph.nodes[0].inputs[1].values.tolist() == [1.0] * 6
    ortc.assert_same(before, ortc.model(graph), {"x": RNG.standard_normal((2, 6, 5, 5)).astype(np.float32)}, atol=1e-5)


def test_single_group_is_not_fused(ortc):
    # TensorRT <= 10.16 computes GroupNormalization(num_groups=1) as instance norm (NVIDIA/TensorRT#4756).
    graph = _exported_group_norm(ortc, [2, 4, 3, 3], groups=1)
    assert fuse_group_norm(graph) == 0 and graph.opset == 17


def test_refuses_to_raise_opset_under_reduce_axes_attribute(ortc):
    graph = _exported_group_norm(ortc, [2, 8, 3, 4], groups=4)
    y = graph.outputs[0]
    mean = gs.Variable("mean", dtype=np.float32)
    graph.nodes.append(gs.Node("ReduceMean", attrs={"axes": [1]}, inputs=[y], outputs=[mean]))
    graph.outputs.append(mean)
    with pytest.raises(T2VError, match="ReduceMean"):
        fuse_group_norm(graph)


def test_opt_in_only():
    assert "fuse_group_norm" not in DEFAULT_PIPELINE
    assert all("fuse_group_norm" not in names for names in PIPELINES.values())
