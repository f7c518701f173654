"""The build plan and its VRAM estimate, on hand-built graphs and on every GPU profile x embedded model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from onnx import TensorProto, helper

from t2vtrt.build.engines import plan as planmod
from t2vtrt.build.engines.plan import (
    analyze_graph,
    attention_scores,
    effective_ranges,
    engine_name,
    graph_precision,
    make_plan,
    weight_bytes,
)
from t2vtrt.build.families.spec import ShapeRanges
from t2vtrt.build.gpus.profiles import list_profiles, load_profile
from t2vtrt.build.models import EMBEDDED


import synthetic_artifacts as synthetic  # tests/support (pytest pythonpath)


def _save(tmp_path: Path, graph: object, name: str = "g.onnx") -> Path:
    """Save a graph (opset 17) and return its path."""
    import onnx

    path = tmp_path / name
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def mlp_graph() -> object:
    """X[B,4] -MatMul W1[4,8]-> Y[B,8] -Relu-> Z[B,8] -MatMul W2[8,2]-> out[B,2]."""
    return helper.make_graph(
        [helper.make_node("MatMul", ["X", "W1"], ["Y"]), helper.make_node("Relu", ["Y"], ["Z"]),
         helper.make_node("MatMul", ["Z", "W2"], ["out"])],
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
        [helper.make_node("QuantizeLinear", ["W", "s", "zp"], ["Wq"]), helper.make_node("DequantizeLinear", ["Wq", "s", "zp"], ["Wd"]),
         helper.make_node("QuantizeLinear", ["X", "s", "zp"], ["Xq"]), helper.make_node("DequantizeLinear", ["Xq", "s", "zp"], ["Xd"]),
         helper.make_node("MatMul", ["Xd", "Wd"], ["out"])],
        "qdq",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["B", 16])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["B", 16])],
        [helper.make_tensor("W", TensorProto.FLOAT, [16, 16], [0.5] * 256), helper.make_tensor("s", TensorProto.FLOAT, [], [0.1]),
         helper.make_tensor("zp", TensorProto.INT8, [], [0])],
    )
    stats = analyze_graph(_save(tmp_path, graph), {"X": (2, 16)})
    assert stats.precision == "int8"
    assert stats.weights["engine"] == 256 + 4 + 1 and stats.weights["fp32"] == 1024 + 4 + 1


def attention_graph(dtype: int) -> object:
    """Q[B,S,D] x K^T[B,D,S] -> scale -> Softmax -> x V[B,S,D]."""
    return helper.make_graph(
        [helper.make_node("MatMul", ["Q", "Kt"], ["qk"]), helper.make_node("Mul", ["qk", "scale"], ["scores"]),
         helper.make_node("Softmax", ["scores"], ["probs"], axis=-1), helper.make_node("MatMul", ["probs", "V"], ["out"])],
        "attention",
        [helper.make_tensor_value_info("Q", dtype, ["B", "S", 8]), helper.make_tensor_value_info("Kt", dtype, ["B", 8, "S"]),
         helper.make_tensor_value_info("V", dtype, ["B", "S", 8])],
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
        [helper.make_node("Identity", ["W"], ["Wi"]), helper.make_node("MatMul", ["X", "Wi"], ["out"])], "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 4])], [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor("W", TensorProto.FLOAT, [4, 4], [1.0] * 16)])
    model = helper.make_model(graph)
    assert weight_bytes(model)["int8"] == 16 and graph_precision(model) == "fp32"


def test_effective_ranges_intersect_and_keep_the_model_when_disjoint() -> None:
    """GPU ranges narrow the model's; a disjoint axis keeps the model's own range."""
    model = ShapeRanges(batch=(1, 1, 2), frames=(1, 8, 16), height=(32, 64, 128), width=(32, 64, 128))
    gpu = ShapeRanges(batch=(1, 1, 1), frames=(8, 16, 24), height=(256, 256, 320), width=(64, 96, 576))
    assert effective_ranges(model, gpu) == ShapeRanges(batch=(1, 1, 1), frames=(8, 16, 16), height=(32, 64, 128), width=(64, 96, 128))
    assert effective_ranges(model, None) == model


def test_engine_names_carry_component_precision_version_and_capability() -> None:
    """denoiser.int8.trt10.13.3.sm86.plan; NA before TensorRT is installed."""
    assert engine_name("denoiser", "int8", "10.13.3.9", "sm86") == "denoiser.int8.trt10.13.3.sm86.plan"
    assert engine_name("vae_decoder", "fp16", None, "sm89") == "vae_decoder.fp16.trtNA.sm89.plan"


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Synthetic artifacts for every embedded model."""
    root = tmp_path_factory.mktemp("plan-artifacts")
    return {model: synthetic.make_artifacts(root, model) for model in EMBEDDED}


@pytest.mark.parametrize("profile", [p.name for p in list_profiles()])
@pytest.mark.parametrize("model", sorted(EMBEDDED))
def test_plan_for_every_profile_and_model(artifacts: dict[str, object], model: str, profile: str) -> None:
    """Every profile x embedded model: a fitting plan whose profiles lie inside the model's ranges."""
    paths = artifacts[model]
    gpu = load_profile(profile)
    plan = make_plan(paths, gpu, tensorrt_version="10.13.3.9")
    data = json.loads(json.dumps(plan.to_json()))
    assert plan.fits and data["vram"]["fits"]
    model_ranges = EMBEDDED[model].ranges
    for axis, (lo, opt, hi) in plan.ranges.to_json().items():
        mlo, _, mhi = getattr(model_ranges, axis)
        assert mlo <= lo <= opt <= hi <= mhi
    assert set(data["components"]) == {"text_encoder", "denoiser", "vae_decoder"}
    for name, comp in data["components"].items():
        assert comp["variants"]["fp32"]["engine"] == f"{name}.fp32.trt10.13.3.{gpu.sm}.plan"
        assert comp["variants"]["fp32"]["source"] == f"onnx/{name}.opt.onnx"
        for lo, opt, hi in comp["profile"].values():
            assert all(a <= b <= c for a, b, c in zip(lo, opt, hi))
        assert comp["weights_bytes"] > 0 and comp["unknown_shapes"] == 0
    assert data["builder"]["strongly_typed"] and data["builder"]["precision_flags"] == []
    assert data["builder"]["timing_cache"] == f"engines/timing/{profile}.trt10.13.3.cache"
    assert data["gpu"]["compute_capability"] == gpu.compute_capability
    assert plan.summary()[0].startswith(f"plan for {profile}")


def test_gpu_shapes_narrow_the_engine_profiles(artifacts: dict[str, object]) -> None:
    """rtx4060 allows batch 1 only: every component's batch axis follows (CFG doubles the denoiser's)."""
    plan = make_plan(artifacts["tiny"], load_profile("rtx4060"))
    assert plan.ranges.batch == (1, 1, 1) and plan.ranges.frames == (8, 16, 16)
    assert plan.components["denoiser"].shapes["sample"][2][:3] == [2, 4, 16]
    assert plan.components["vae_decoder"].spec["axes"]["batch"] == [1, 16, 16]


def test_plan_without_family_config_keeps_export_ranges(tmp_path: Path) -> None:
    """An export.json without `config`: the exported ranges are used, and the plan says so."""
    paths = synthetic.make_artifacts(tmp_path, "tiny", with_config=False)
    plan = make_plan(paths, load_profile("rtx4060"))
    assert plan.ranges == EMBEDDED["tiny"].ranges
    assert any("no family config" in note for note in plan.notes)


def test_int8_denoiser_becomes_the_default(tmp_path: Path) -> None:
    """With onnx/denoiser.int8.onnx present: an int8 variant, the default precision, and what the runtime opens."""
    import shutil

    paths = synthetic.make_artifacts(tmp_path, "tiny")
    shutil.copyfile(paths.onnx("denoiser", "opt"), paths.onnx("denoiser", "int8"))
    plan = make_plan(paths, load_profile("rtx3060"))
    assert set(plan.components["denoiser"].variants) == {"fp32", "int8"}
    assert plan.default_precision == "int8"
    assert plan.components["denoiser"].runtime_precision == "int8"
    assert plan.components["text_encoder"].runtime_precision == "fp32"


def test_fp8_graph_is_skipped_on_a_gpu_without_fp8(tmp_path: Path) -> None:
    """A precision the profile does not run is left out, with a note."""
    import shutil

    paths = synthetic.make_artifacts(tmp_path, "tiny")
    shutil.copyfile(paths.onnx("denoiser", "opt"), paths.onnx("denoiser", "fp8"))
    plan = make_plan(paths, load_profile("t4"))
    assert "fp8" not in plan.components["denoiser"].variants
    assert any("does not run fp8" in note for note in plan.notes)


def test_plan_that_does_not_fit_says_what_would(tmp_path: Path) -> None:
    """1.5 GiB text encoder + 1.5 GiB denoiser on a 3 GiB card: resident does not fit; --low-vram and INT8 would."""
    gib_floats = (1 << 30) // 4
    paths = synthetic.make_artifacts(tmp_path, "tiny", extra_weights={"text_encoder": gib_floats * 3 // 4, "denoiser": gib_floats * 3 // 4})
    profile = load_profile(str(synthetic.write_profile(tmp_path, "small", 3.0, reserve_gb=0.25)))
    plan = make_plan(paths, profile)
    assert not plan.fits and plan.vram.mode == "resident"
    text = " | ".join(plan.vram.alternatives)
    assert "--low-vram" in text and "INT8 denoiser" in text
    low = make_plan(paths, profile, low_vram=True)
    assert low.fits and low.vram.required < plan.vram.required
    # 2.75 GiB usable - 1.5 GiB for the largest stage leaves more than the profile's 1024 MiB workspace.
    assert low.vram.workspace == 1024 * planmod.MIB and low.builder["workspace_mib"] == 1024


def test_smaller_shape_suggestion(tmp_path: Path) -> None:
    """When activations dominate, a smaller max shape is suggested and would fit."""
    paths = synthetic.make_artifacts(tmp_path, "tiny")
    profile = load_profile(str(synthetic.write_profile(tmp_path, "tiny-gpu", 1.0, reserve_gb=0.25)))
    plan = make_plan(paths, profile)
    # Shrink the budget below the plan's needs, then ask for what would fit.
    budget = plan.vram.resident // 2
    text = planmod.smaller_shape(plan.components, plan.ranges, budget, low_vram=False)
    assert text is not None and "frames at" in text


def test_plan_on_the_exported_tiny_model(tiny_paths: object) -> None:
    """The real exported + patched graphs: shapes inferred, weights as in the graphs, a fitting plan on the smallest GPU."""
    plan = make_plan(tiny_paths, load_profile("rtx4060"))
    assert plan.fits
    for name, component in plan.components.items():
        stats = component.stats
        graph_bytes = tiny_paths.onnx(name, "opt").stat().st_size
        assert 0.5 * graph_bytes < stats.weights["fp32"] <= graph_bytes, name  # weights are most of a graph file
        assert stats.activation_bytes > 0 and stats.io_bytes > 0
        assert stats.unknown_shapes <= 0.05 * len(planmod.load_graph(tiny_paths.onnx(name, "opt")).graph.node), name
    # The denoiser's activations dominate and grow with the max shape.
    assert plan.components["denoiser"].stats.activation_bytes > plan.components["text_encoder"].stats.activation_bytes


def test_gather_with_matrix_indices_on_a_shape_is_inferred(tmp_path: Path) -> None:
    """Gather(Shape(x), [[0, 1]]) (what the OneHot->Gather pass writes) breaks ORT's symbolic inference; the rewrite does not."""
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    graph = helper.make_graph(
        [helper.make_node("Shape", ["X"], ["s"]), helper.make_node("Gather", ["s", "idx"], ["g"]),
         helper.make_node("Reshape", ["g", "flat"], ["dims"]), helper.make_node("Reshape", ["X", "dims"], ["Y"]),
         helper.make_node("Relu", ["Y"], ["out"])],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["B", 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
        [helper.make_tensor("idx", TensorProto.INT64, [1, 2], [0, 1]), helper.make_tensor("flat", TensorProto.INT64, [1], [-1])],
    )
    model = planmod._with_input_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), {"X": (8, 4)})
    with pytest.raises(TypeError):
        SymbolicShapeInference.infer_shapes(model, auto_merge=True)
    sizes = planmod.tensor_sizes(model, {"X": (8, 4)})
    assert sizes["g"] == 2 * 8 and sizes["Y"] == 8 * 4 * 4 and sizes["out"] == 8 * 4 * 4
