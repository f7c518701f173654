"""instance_norm_to_layer_norm: GroupNorm's unit-scale InstanceNormalization -> LayerNormalization(axis=2)."""

import numpy as np
import onnx_graphsurgeon as gs

from t2vtrt.build.surgery.instance_norm import instance_norm_to_layer_norm


def _group_norm_graph(ortc, groups: int, channels: int, scale: np.ndarray | None = None) -> gs.Graph:
    """The exporter's GroupNorm on a 5-D (N, C, F, H, W) input: Reshape -> InstanceNorm -> Reshape -> Mul -> Add."""
    rng = np.random.default_rng(1)
    x = gs.Variable("x", dtype=np.float32, shape=["n", channels, "f", "h", "w"])
    grouped = gs.Variable("grouped", dtype=np.float32, shape=["n", groups, "l"])
    normed = gs.Variable("normed", dtype=np.float32, shape=["n", groups, "l"])
    shape = gs.Variable("shape", dtype=np.int64, shape=[5])
    back, scaled = (gs.Variable(n, dtype=np.float32, shape=x.shape) for n in ("back", "scaled"))
    y = gs.Variable("y", dtype=np.float32, shape=x.shape)
    unit = np.ones(groups, np.float32) if scale is None else scale
    affine = (rng.standard_normal((channels, 1, 1, 1)).astype(np.float32) for _ in range(2))
    nodes = [
        gs.Node("Reshape", inputs=[x, gs.Constant("target", np.array([0, groups, -1], np.int64))], outputs=[grouped]),
        gs.Node(
            "InstanceNormalization",
            name="gn",
            attrs={"epsilon": 1e-5},
            inputs=[grouped, gs.Constant("s", unit), gs.Constant("b", np.zeros(groups, np.float32))],
            outputs=[normed],
        ),
        gs.Node("Shape", inputs=[x], outputs=[shape]),
        gs.Node("Reshape", inputs=[normed, shape], outputs=[back]),
        gs.Node("Mul", inputs=[back, gs.Constant("gamma", next(affine))], outputs=[scaled]),
        gs.Node("Add", inputs=[scaled, gs.Constant("beta", next(affine))], outputs=[y]),
    ]
    return ortc.graph(nodes, [x], [y])


def _feeds(channels: int) -> dict[str, np.ndarray]:
    """Activations whose per-group mean is well off zero (where a one-pass variance loses digits first)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, channels, 3, 5, 4)) * 2.0 + np.linspace(-6, 6, channels)[None, :, None, None, None]
    return {"x": x.astype(np.float32)}


def test_group_norm_runs_as_layer_norm_with_the_same_output(ortc, op_list):
    graph = _group_norm_graph(ortc, groups=4, channels=16)
    before = ortc.model(graph)
    assert instance_norm_to_layer_norm(graph) == 1
    assert "InstanceNormalization" not in op_list(graph) and op_list(graph).count("LayerNormalization") == 1
    norm = next(n for n in graph.nodes if n.op == "LayerNormalization")
    assert norm.attrs["axis"] == 2 and norm.attrs["epsilon"] == 1e-5
    feeds = _feeds(16)
    ortc.assert_same(before, ortc.model(graph), feeds, atol=2e-5)
    # Against float64 GroupNorm (the affine applied as the graph does), not only against the old graph.
    x = feeds["x"].astype(np.float64).reshape(2, 4, -1)
    normed = ((x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)).reshape(feeds["x"].shape)
    gamma, beta = (const_of(graph, n).astype(np.float64) for n in ("gamma", "beta"))
    np.testing.assert_allclose(ortc.run(ortc.model(graph), feeds)[0], normed * gamma + beta, rtol=0, atol=2e-5)


def test_row_length_follows_the_input_shape(ortc):
    graph = _group_norm_graph(ortc, groups=4, channels=16)
    before = ortc.model(graph)
    instance_norm_to_layer_norm(graph)
    after = ortc.model(graph)
    for shape in [(1, 16, 1, 2, 2), (3, 16, 5, 3, 7)]:
        x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
        ortc.assert_same(before, after, {"x": x}, atol=2e-5)


def test_instance_norm_with_its_own_affine_is_left_alone(ortc, op_list):
    graph = _group_norm_graph(ortc, groups=4, channels=16, scale=np.array([1, 2, 1, 1], np.float32))
    assert instance_norm_to_layer_norm(graph) == 0
    assert "InstanceNormalization" in op_list(graph) and "LayerNormalization" not in op_list(graph)


def const_of(graph: gs.Graph, name: str) -> np.ndarray:
    """The values of the graph's constant called `name`."""
    return graph.tensors()[name].values
