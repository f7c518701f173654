"""Q/DQ graph tools, layer groups and plan files on hand-built graphs (no model needed)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from t2vtrt.calibration import qdq
from t2vtrt.calibration.groups import layer_groups
from t2vtrt.calibration.plan import check_plan_nodes, fp16_nodes, load_plan
from t2vtrt.runtime.errors import T2VError
from qdq_scales import activation_scales  # tests/support


def qdq_conv_graph() -> onnx.ModelProto:
    """x -Q/DQ-> Conv(W -Q/DQ->) -> Relu -> y: one activation and one per-channel weight quantizer."""
    w = np.ones((2, 1, 1, 1), np.float32)
    inits = [
        numpy_helper.from_array(w, "W"),
        numpy_helper.from_array(np.float32(0.1), "x_scale"),
        numpy_helper.from_array(np.int8(0), "x_zp"),
        numpy_helper.from_array(np.array([0.01, 0.02], np.float32), "W_scale"),
        numpy_helper.from_array(np.zeros(2, np.int8), "W_zp"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zp"], ["x_q"], name="x_Q"),
        helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zp"], ["x_dq"], name="x_DQ"),
        helper.make_node("QuantizeLinear", ["W", "W_scale", "W_zp"], ["W_q"], name="W_Q", axis=0),
        helper.make_node("DequantizeLinear", ["W_q", "W_scale", "W_zp"], ["W_dq"], name="W_DQ", axis=0),
        helper.make_node("Conv", ["x_dq", "W_dq"], ["c"], name="/model/down_blocks.0/resnets.0/conv1/Conv"),
        helper.make_node("Relu", ["c"], ["y"], name="/model/down_blocks.0/resnets.0/act/Relu"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 2, 2])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])


def test_reading_quantizers() -> None:
    """Activations vs weights, scales, and which nodes read dequantized tensors."""
    model = qdq_conv_graph()
    assert list(qdq.activation_quantizers(model)) == ["x"]
    assert activation_scales(model) == {"x": pytest.approx(0.1)}
    assert qdq.quantized_nodes(model) == ["/model/down_blocks.0/resnets.0/conv1/Conv"]


def test_set_scales_keeps_dtype_and_refuses_gaps() -> None:
    """New scales land in place; a quantized tensor without a scale is a one-line error."""
    model = qdq_conv_graph()
    qdq.set_activation_scales(model, {"x": 0.5})
    assert activation_scales(model) == {"x": 0.5}
    with pytest.raises(T2VError, match="no calibrated scale"):
        qdq.set_activation_scales(model, {})


def test_strip_qdq_restores_float_inputs() -> None:
    """The stripped node reads x and W again; the orphaned Q/DQ nodes are gone; the graph still checks."""
    conv = "/model/down_blocks.0/resnets.0/conv1/Conv"
    model = qdq_conv_graph()
    assert qdq.nodes_touching_qdq(model, {conv}) == [conv]
    stripped = qdq.strip_qdq(model, {conv})
    node = next(n for n in stripped.graph.node if n.name == conv)
    assert list(node.input) == ["x", "W"]
    assert not any(n.op_type in qdq.QDQ_OPS for n in stripped.graph.node)
    assert qdq.nodes_touching_qdq(stripped, {conv}) == []
    onnx.checker.check_model(stripped)
    assert len(model.graph.node) == 6  # the original is untouched


def test_layer_groups_from_family_data() -> None:
    """Default patterns first, then block/kind from the family's regexes."""
    family = SimpleNamespace(
        SENSITIVE_LAYERS=("conv_in", "norm"),
        BLOCK_PATTERN=r"^/model/(down_blocks\.\d+|conv_in)/",
        LAYER_KINDS=(("resnet", r"/resnets\.\d+/"), ("attention", r"/attentions\.\d+/")),
    )
    nodes = {
        "/model/conv_in/Conv": "Conv",
        "/model/down_blocks.0/resnets.0/conv1/Conv": "Conv",
        "/model/down_blocks.0/resnets.0/norm1/LayerNormalization": "LayerNormalization",
        "/model/down_blocks.0/attentions.0/proj_in/MatMul": "MatMul",
        "/model/up/x/Add": "Add",
    }
    groups = {g.name: g for g in layer_groups(nodes, family)}
    assert set(groups) == {"default:conv_in", "default:norm", "down_blocks.0/resnet", "down_blocks.0/attention", "other/other"}
    assert groups["default:norm"].default_pattern == "norm"
    assert groups["down_blocks.0/resnet"].nodes == ["/model/down_blocks.0/resnets.0/conv1/Conv"]


def write_plan(path: Path, groups: list[dict]) -> Path:
    """A plan file with these groups."""
    path.write_text(json.dumps({"version": 1, "groups": groups}))
    return path


def test_plan_decisions(tmp_path: Path) -> None:
    """FP16 nodes are the fp16 groups' nodes (a node named by both kinds of group falls back)."""
    plan = load_plan(
        write_plan(
            tmp_path / "p.json", [{"name": "a", "nodes": ["n1", "n2"], "decision": "fp16"}, {"name": "b", "nodes": ["n2", "n3"], "decision": "int8"}]
        )
    )
    assert fp16_nodes(plan) == ["n1", "n2"]
    check_plan_nodes(plan, {"n1", "n2", "n3"}, "g.onnx")


@pytest.mark.parametrize(
    "groups, message",
    [
        ([], "no 'groups' list"),
        ([{"name": "a", "decision": "fp16"}], "needs a 'nodes' list"),
        ([{"name": "a", "nodes": [], "decision": "fp8"}], "decision 'fp8'"),
    ],
)
def test_malformed_plans(tmp_path: Path, groups: list[dict], message: str) -> None:
    """A broken hand edit is one line naming what is wrong."""
    with pytest.raises(T2VError, match=message):
        load_plan(write_plan(tmp_path / "p.json", groups))


def test_plan_naming_missing_nodes(tmp_path: Path) -> None:
    """Nodes the graph does not have are refused, named."""
    plan = load_plan(write_plan(tmp_path / "p.json", [{"name": "a", "nodes": ["n1", "/typo/Conv"], "decision": "fp16"}]))
    with pytest.raises(T2VError, match="does not have: '/typo/Conv'"):
        check_plan_nodes(plan, {"n1"}, "g.onnx")
    with pytest.raises(T2VError, match="does not exist"):
        load_plan(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(T2VError, match="not valid JSON"):
        load_plan(tmp_path / "bad.json")


def test_strip_qdq_dequantizes_a_stored_integer_tensor() -> None:
    """A bias stored as int32 behind a DQ (shared with a quantized layer) becomes its float value again."""
    inits = [
        numpy_helper.from_array(np.array([3, -2], np.int32), "b_q"),
        numpy_helper.from_array(np.float32(0.5), "b_scale"),
        numpy_helper.from_array(np.int32(0), "b_zp"),
    ]
    nodes = [
        helper.make_node("DequantizeLinear", ["b_q", "b_scale", "b_zp"], ["b"], name="b_DQ"),
        helper.make_node("Add", ["x", "b"], ["y"], name="add"),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])], inits
    )
    stripped = qdq.strip_qdq(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]), {"add"})
    add = next(n for n in stripped.graph.node if n.name == "add")
    values = {t.name: numpy_helper.to_array(t) for t in stripped.graph.initializer}
    np.testing.assert_array_equal(values[add.input[1]], np.array([1.5, -1.0], np.float32))
    assert [n.op_type for n in stripped.graph.node] == ["Add"]


def _two_conv_qdq_graph() -> onnx.ModelProto:
    """x -Q/DQ-> conv_a (W_a -Q/DQ->) -> h -Q/DQ-> conv_b (stored int8 W_b -DQ->) -> y."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((3, 2, 1, 1)).astype(np.float32), "W_a"),
        numpy_helper.from_array(rng.integers(-127, 128, (2, 3, 1, 1)).astype(np.int8), "W_b_q"),
        numpy_helper.from_array(np.float32(0.05), "s"),
        numpy_helper.from_array(np.int8(0), "zp"),
        numpy_helper.from_array(np.float32(0.01), "w_s"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["x_q"], name="x_Q"),
        helper.make_node("DequantizeLinear", ["x_q", "s", "zp"], ["x_dq"], name="x_DQ"),
        helper.make_node("QuantizeLinear", ["W_a", "w_s", "zp"], ["W_a_q"], name="W_a_Q"),
        helper.make_node("DequantizeLinear", ["W_a_q", "w_s", "zp"], ["W_a_dq"], name="W_a_DQ"),
        helper.make_node("Conv", ["x_dq", "W_a_dq"], ["h"], name="conv_a"),
        helper.make_node("QuantizeLinear", ["h", "s", "zp"], ["h_q"], name="h_Q"),
        helper.make_node("DequantizeLinear", ["h_q", "s", "zp"], ["h_dq"], name="h_DQ"),
        helper.make_node("DequantizeLinear", ["W_b_q", "w_s", "zp"], ["W_b_dq"], name="W_b_DQ"),
        helper.make_node("Conv", ["h_dq", "W_b_dq"], ["y"], name="conv_b"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 3, 3])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])


def test_switchable_graph_equals_stripping_for_every_int8_set() -> None:
    """Flags select, per node, exactly what strip_qdq leaves: one graph reproduces every subset's output."""
    import onnxruntime as ort

    def run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # no fusions: the values themselves
        return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"]).run(["y"], feeds)[0]

    model = _two_conv_qdq_graph()
    x = np.random.default_rng(1).standard_normal((1, 2, 3, 3)).astype(np.float32) * 3
    graph, flags = qdq.switchable(model, ["conv_a", "conv_b"])
    onnx.checker.check_model(graph)
    assert set(flags) == {"conv_a", "conv_b"}
    outputs = []
    for int8 in (set(), {"conv_a"}, {"conv_b"}, {"conv_a", "conv_b"}):
        switches = {flag: np.array(node in int8) for node, flag in flags.items()}
        outputs.append(run(graph, {"x": x, **switches}))
        np.testing.assert_array_equal(outputs[-1], run(qdq.strip_qdq(model, {"conv_a", "conv_b"} - int8), {"x": x}))
    assert not np.array_equal(outputs[0], outputs[-1])  # the flags do change the output


def test_switched_inputs_are_quantized_only_inside_their_if() -> None:
    """A run computes Q/DQ only for flagged nodes: no switched pair is left in the main graph, each If holds its own."""
    graph, flags = qdq.switchable(_two_conv_qdq_graph(), ["conv_a", "conv_b"])
    top = [n.op_type for n in graph.graph.node]
    assert "QuantizeLinear" not in top
    assert top.count("If") == 3  # x and W_a into conv_a, h into conv_b
    assert top.count("DequantizeLinear") == 1  # the stored int8 W_b's, which needs no switch
    for node in (n for n in graph.graph.node if n.op_type == "If"):
        branches = {a.name: [m.op_type for m in a.g.node] for a in node.attribute}
        assert branches == {"then_branch": ["QuantizeLinear", "DequantizeLinear"], "else_branch": ["Identity"]}
