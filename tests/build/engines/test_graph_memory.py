"""What a graph costs on a GPU (weights, activations, I/O, fused attention), on hand-built graphs."""

from __future__ import annotations

from pathlib import Path

import pytest
from onnx import TensorProto, helper

from t2vtrt.build.engines import graph_memory
from t2vtrt.build.engines.graph_memory import analyze_graph, attention_scores, graph_precision, weight_bytes


def _save(tmp_path: Path, graph: object, name: str = "g.onnx") -> Path:
    """Save a graph (opset 17) and return its path."""
    import onnx

    path = tmp_path / name
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def mlp_graph() -> object:
    """X[B,4] -MatMul W1[4,8]-> Y[B,8] -Relu-> Z[B,8] -MatMul W2[8,2]-> out[B,2]."""
    return helper.make_graph(
        [helper.make_node("MatMul", ["X", "W1"], ["Y"]), helper.make_node("Relu", ["Y"], ["Z"]), helper.make_node("MatMul", ["Z", "W2"], ["out"])],
        "mlp",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["B", 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["B", 2])],
        [helper.make_tensor("W1", TensorProto.FLOAT, [4, 8], [0.1] * 32), helper.make_tensor("W2", TensorProto.FLOAT, [8, 2], [0.1] * 16)],
    )


def test_vram_estimate_matches_hand_computation(tmp_path: Path) -> None:
    """Batch 16: weights 48 floats; io X 256 B + out 128 B; peak Y and Z live together at Relu = 2 x 512 B."""
    stats = analyze_graph(_save(tmp_path, mlp_graph()), {"X": (16, 4)})
    assert stats.weights == {"engine": 192, "fp32": 192, "fp16": 96, "int8": 48}
    assert stats.io_bytes == 16 * 4 * 4 + 16 * 2 * 4
    assert stats.activation_bytes == 2 * 16 * 8 * 4
    assert (stats.unknown_shapes, stats.fused_attention_bytes, stats.precision) == (0, 0, "fp32")


def test_activations_scale_with_the_shape(tmp_path: Path) -> None:
    """The same graph at batch 64 has 4x the activations, the same weights."""
    path = _save(tmp_path, mlp_graph())
    small, large = analyze_graph(path, {"X": (16, 4)}), analyze_graph(path, {"X": (64, 4)})
    assert large.activation_bytes == 4 * small.activation_bytes and large.weights == small.weights


def test_int8_qdq_graph_counts_weights_at_one_byte(tmp_path: Path) -> None:
    """An explicit Q/DQ graph is int8; its fp32 weight behind QuantizeLinear is stored as int8 by TensorRT."""
    graph = helper.make_graph(
        [
            helper.make_node("QuantizeLinear", ["W", "s", "zp"], ["Wq"]),
            helper.make_node("DequantizeLinear", ["Wq", "s", "zp"], ["Wd"]),
            helper.make_node("QuantizeLinear", ["X", "s", "zp"], ["Xq"]),
            helper.make_node("DequantizeLinear", ["Xq", "s", "zp"], ["Xd"]),
            helper.make_node("MatMul", ["Xd", "Wd"], ["out"]),
        ],
        "qdq",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["B", 16])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["B", 16])],
        [
            helper.make_tensor("W", TensorProto.FLOAT, [16, 16], [0.5] * 256),
            helper.make_tensor("s", TensorProto.FLOAT, [], [0.1]),
            helper.make_tensor("zp", TensorProto.INT8, [], [0]),
        ],
    )
    stats = analyze_graph(_save(tmp_path, graph), {"X": (2, 16)})
    assert stats.precision == "int8"
    assert stats.weights["engine"] == 256 + 4 + 1 and stats.weights["fp32"] == 1024 + 4 + 1
    # Only Xq is an activation: Wq/Wd are folded into the int8 weight, Xd is fused into the MatMul that reads it.
    assert stats.activation_bytes == 2 * 16


def test_tensors_made_from_weights_alone_are_folded() -> None:
    """A weight's Transpose -> Cast chain is folded at build time; anything reading an activation is not."""
    graph = helper.make_graph(
        [
            helper.make_node("Transpose", ["W"], ["Wt"]),
            helper.make_node("Cast", ["Wt"], ["Wc"], to=TensorProto.FLOAT16),
            helper.make_node("Cast", ["X"], ["Xc"], to=TensorProto.FLOAT16),
            helper.make_node("MatMul", ["Xc", "Wc"], ["out"]),
        ],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT16, [1, 4])],
        [helper.make_tensor("W", TensorProto.FLOAT, [4, 4], [1.0] * 16)],
    )
    model = helper.make_model(graph)
    assert graph_memory.folded_tensors(model) == {"Wt", "Wc"}
    assert graph_memory.not_materialised(model, "fp16") == {"Wt", "Wc"}


def attention_graph(dtype: int) -> object:
    """Q[B,S,D] x K^T[B,D,S] -> scale -> Softmax -> x V[B,S,D]."""
    return helper.make_graph(
        [
            helper.make_node("MatMul", ["Q", "Kt"], ["qk"]),
            helper.make_node("Mul", ["qk", "scale"], ["scores"]),
            helper.make_node("Softmax", ["scores"], ["probs"], axis=-1),
            helper.make_node("MatMul", ["probs", "V"], ["out"]),
        ],
        "attention",
        [
            helper.make_tensor_value_info("Q", dtype, ["B", "S", 8]),
            helper.make_tensor_value_info("Kt", dtype, ["B", 8, "S"]),
            helper.make_tensor_value_info("V", dtype, ["B", "S", 8]),
        ],
        [helper.make_tensor_value_info("out", dtype, ["B", "S", 8])],
        [helper.make_tensor("scale", dtype, [], [0.25])],
    )


def test_attention_scores_are_fused_below_fp32(tmp_path: Path) -> None:
    """fp16: the S x S score tensors are TensorRT-fused (reported, not counted); fp32: counted."""
    shapes = {"Q": (2, 64, 8), "Kt": (2, 8, 64), "V": (2, 64, 8)}
    fp16 = analyze_graph(_save(tmp_path, attention_graph(TensorProto.FLOAT16), "a16.onnx"), shapes)
    fp32 = analyze_graph(_save(tmp_path, attention_graph(TensorProto.FLOAT), "a32.onnx"), shapes)
    assert fp16.precision == "fp16" and fp32.precision == "fp32"
    assert fp16.fused_attention_bytes == 3 * 2 * 64 * 64 * 2 and fp16.activation_bytes == 0
    assert fp32.fused_attention_bytes == 0 and fp32.activation_bytes == 2 * 2 * 64 * 64 * 4
    assert attention_scores(helper.make_model(attention_graph(TensorProto.FLOAT))) == {"qk", "scores", "probs"}


def test_weight_bytes_see_through_identity() -> None:
    """torch exports shared weights as Identity(initializer): still a quantizable MatMul weight."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["W"], ["Wi"]), helper.make_node("MatMul", ["X", "Wi"], ["out"])],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor("W", TensorProto.FLOAT, [4, 4], [1.0] * 16)],
    )
    model = helper.make_model(graph)
    assert weight_bytes(model)["int8"] == 16 and graph_precision(model) == "fp32"


def test_gather_with_matrix_indices_on_a_shape_is_inferred(tmp_path: Path) -> None:
    """Gather(Shape(x), [[0, 1]]) (what the OneHot->Gather pass writes) breaks ORT's symbolic inference; the rewrite does not."""
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    graph = helper.make_graph(
        [
            helper.make_node("Shape", ["X"], ["s"]),
            helper.make_node("Gather", ["s", "idx"], ["g"]),
            helper.make_node("Reshape", ["g", "flat"], ["dims"]),
            helper.make_node("Reshape", ["X", "dims"], ["Y"]),
            helper.make_node("Relu", ["Y"], ["out"]),
        ],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["B", 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
        [helper.make_tensor("idx", TensorProto.INT64, [1, 2], [0, 1]), helper.make_tensor("flat", TensorProto.INT64, [1], [-1])],
    )
    model = graph_memory._with_input_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), {"X": (8, 4)})
    with pytest.raises(TypeError):
        SymbolicShapeInference.infer_shapes(model, auto_merge=True)
    sizes = graph_memory.tensor_sizes(model, {"X": (8, 4)})
    assert sizes["g"] == 2 * 8 and sizes["Y"] == 8 * 4 * 4 and sizes["out"] == 8 * 4 * 4


def test_attention_behind_casts_is_fused(tmp_path: Path) -> None:
    """AutoCast keeps a Softmax in FP32 between casts: MatMul -> Cast -> Softmax -> Cast -> MatMul is still one MHA."""
    f16, f32 = TensorProto.FLOAT16, TensorProto.FLOAT
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["Q", "Kt"], ["qk"]),
            helper.make_node("Cast", ["qk"], ["qk32"], to=f32),
            helper.make_node("Softmax", ["qk32"], ["p32"], axis=-1),
            helper.make_node("Cast", ["p32"], ["p"], to=f16),
            helper.make_node("MatMul", ["p", "V"], ["out"]),
        ],
        "attention-casts",
        [
            helper.make_tensor_value_info("Q", f16, ["B", "S", 8]),
            helper.make_tensor_value_info("Kt", f16, ["B", 8, "S"]),
            helper.make_tensor_value_info("V", f16, ["B", "S", 8]),
        ],
        [helper.make_tensor_value_info("out", f16, ["B", "S", 8])],
        [helper.make_tensor("w", f16, [64], [0.0] * 64)],
    )
    assert attention_scores(helper.make_model(graph)) == {"qk", "qk32", "p32", "p"}
    stats = analyze_graph(_save(tmp_path, graph), {"Q": (2, 64, 8), "Kt": (2, 8, 64), "V": (2, 64, 8)})
    assert stats.activation_bytes == 0 and stats.fused_attention_bytes == 2 * 64 * 64 * (2 + 4 + 4 + 2)


def test_small_external_initializers_are_read_for_shape_inference(tmp_path: Path) -> None:
    """A > 2 GB export keeps Reshape targets in external data too: they are read, so no shape is left unknown."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["X", "W"], ["Y"]),
            helper.make_node("Reshape", ["Y", "target"], ["Z"]),
            helper.make_node("Relu", ["Z"], ["out"]),
        ],
        "external",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["B", 16])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.full((16, 16), 0.5, np.float32), "W"), numpy_helper.from_array(np.array([-1, 4, 4], np.int64), "target")],
    )
    path = tmp_path / "ext.onnx"
    onnx.save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="ext.onnx.data",
        size_threshold=0,
    )
    assert all(t.data_location == 1 for t in onnx.load(str(path), load_external_data=False).graph.initializer)
    stats = analyze_graph(path, {"X": (8, 16)})
    assert stats.unknown_shapes == 0 and stats.guessed == ()
    assert stats.activation_bytes == 2 * 8 * 16 * 4  # Y and Z live together at the Reshape
    assert stats.weights["fp32"] == 256 * 4 + 3 * 8
