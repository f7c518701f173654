"""The build plan and its VRAM estimate, on every GPU profile x embedded model (graph costs: test_graph_memory.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from t2vtrt.build.artifacts import ArtifactPaths
from t2vtrt.build.engines import graph_memory
from t2vtrt.build.engines import plan as planmod
from t2vtrt.build.engines.plan import effective_ranges, engine_name, make_plan
from t2vtrt.build.families.spec import ShapeRanges
from t2vtrt.build.gpus.profiles import list_profiles, load_profile
from t2vtrt.build.models import EMBEDDED


import synthetic_artifacts as synthetic  # tests/support (pytest pythonpath)

# The synthetic artifacts are unet3d-shaped; the wan family's plan is tested on a real export (tests/build/families).
UNET3D_MODELS = sorted(m for m, e in EMBEDDED.items() if e.family == "unet3d")


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
    return {model: synthetic.make_artifacts(root, model) for model in UNET3D_MODELS}


@pytest.mark.parametrize("profile", [p.name for p in list_profiles()])
@pytest.mark.parametrize("model", UNET3D_MODELS)
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
    # No FP32 engine beside a lower-precision one: it would never run by default and costs build time and memory.
    assert set(plan.components["denoiser"].variants) == {"int8"}
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
        assert stats.unknown_shapes <= 0.05 * len(graph_memory.graph_without_weights(tiny_paths.onnx(name, "opt")).graph.node), name
    # The denoiser's activations dominate and grow with the max shape.
    assert plan.components["denoiser"].stats.activation_bytes > plan.components["text_encoder"].stats.activation_bytes


@pytest.fixture(scope="module")
def tiny_fp16(tiny_paths: object, tmp_path_factory: pytest.TempPathFactory) -> object:
    """The exported tiny model with its gated FP16 graphs (build/precision.py), in a private copy."""
    import shutil

    from t2vtrt.build.artifacts import ArtifactPaths
    from t2vtrt.build.precision import write_low_precision

    paths = ArtifactPaths(tmp_path_factory.mktemp("plan-fp16") / "tiny")
    shutil.copytree(tiny_paths.onnx_dir, paths.onnx_dir)  # type: ignore[attr-defined]
    write_low_precision(paths, ("fp16", "bf16"))
    return paths


def test_plan_on_exported_fp16_graphs(tiny_fp16: object, tiny_paths: object) -> None:
    """GPU targets run every component in FP16: no FP32 engine, 0 unknown shapes, fused attention, less memory than FP32."""
    plan = make_plan(tiny_fp16, load_profile("rtx3060"))
    fp32 = make_plan(tiny_paths, load_profile("rtx3060"))
    assert plan.default_precision == "fp16" and plan.fits
    for name, component in plan.components.items():
        assert set(component.variants) == {"fp16"} and component.runtime_precision == "fp16", name
        assert component.stats.unknown_shapes == 0, (name, component.stats.guessed)
        # AutoCast keeps the text encoder's token-embedding table (a Gather's data, most of the tiny one's weights) in FP32.
        limit = 1.0 if name == "text_encoder" else 0.6
        assert component.stats.weights["engine"] < limit * fp32.components[name].stats.weights["engine"], name
    den, den32 = plan.components["denoiser"].stats, fp32.components["denoiser"].stats
    assert den.fused_attention_bytes > 0 and den.activation_bytes < den32.activation_bytes
    assert plan.vram.resident < fp32.vram.resident


def _profile_with_vram(tmp_path: Path, name: str, gib: float) -> object:
    """A test profile with this much VRAM and no reserve."""
    return load_profile(str(synthetic.write_profile(tmp_path, name, gib, reserve_gb=0.0)))


def test_vae_is_decoded_in_chunks_when_that_fits(tiny_fp16: object, tmp_path: Path) -> None:
    """A card that holds everything but the 16-frame VAE decode: the plan picks the largest chunk that fits."""
    roomy = make_plan(tiny_fp16, _profile_with_vram(tmp_path, "roomy", 64.0))
    vae = roomy.components["vae_decoder"]
    assert vae.spec["axes"]["batch"][2] == 16
    # Half of the VAE's activations and I/O removed from the resident need: 16 frames do not fit, 8 do.
    budget = roomy.vram.resident - (vae.stats.activation_bytes + vae.stats.io_bytes) // 3
    plan = make_plan(tiny_fp16, _profile_with_vram(tmp_path, "tight", budget / planmod.GIB))
    chunk = plan.components["vae_decoder"].spec["axes"]["batch"][2]
    assert plan.fits and 1 <= chunk < 16
    assert plan.components["vae_decoder"].shapes["latent"][2][0] == chunk
    assert plan.components["vae_decoder"].stats.activation_bytes < vae.stats.activation_bytes
    assert any(f"decodes {chunk} frames at a time" in note for note in plan.notes)


def test_a_card_too_small_for_any_chunk_is_refused(tiny_fp16: object, tmp_path: Path) -> None:
    """Below the weights plus one frame's decode nothing fits: refused, the VAE range left as it was, alternatives named."""
    roomy = make_plan(tiny_fp16, _profile_with_vram(tmp_path, "roomy", 64.0))
    weights = sum(c.stats.weights["engine"] for c in roomy.components.values())
    plan = make_plan(tiny_fp16, _profile_with_vram(tmp_path, "micro", weights / 2 / planmod.GIB))
    assert not plan.fits and plan.vram.alternatives
    assert plan.components["vae_decoder"].spec["axes"]["batch"][2] == 16
    assert not any("decodes" in note for note in plan.notes)


def _gate_with_schedule(paths: ArtifactPaths, float_steps: int) -> None:
    """A gate.json that vouches for onnx/denoiser.int8.onnx with a step schedule of `float_steps` first float steps."""
    import json

    from t2vtrt.runtime.files import sha256_file

    schedule = {"fallback": "fp32", "above": 600.0} if float_steps else None
    verdict = {"variant": "int8-qdq", "passed": True, "schedule": schedule, "float_steps": float_steps, "steps": 15}
    paths.calib_dir.mkdir(parents=True, exist_ok=True)
    (paths.calib_dir / "gate.json").write_text(
        json.dumps(
            {"passed": True, "gated": True, "graphs": {"denoiser.int8.onnx": sha256_file(paths.onnx("denoiser", "int8"))}, "variants": [verdict]}
        )
    )


@pytest.mark.parametrize("float_steps", [0, 5])
def test_a_step_schedule_counts_both_denoiser_engines(tmp_path: Path, float_steps: int) -> None:
    """INT8 with a gated schedule opens the fp16 engine too: the plan counts both, and says so; without one, int8 alone."""
    import shutil

    paths = synthetic.make_artifacts(tmp_path, "tiny")
    shutil.copyfile(paths.onnx("denoiser", "opt"), paths.onnx("denoiser", "int8"))
    shutil.copyfile(paths.onnx("denoiser", "opt"), paths.onnx("denoiser", "fp16"))
    _gate_with_schedule(paths, float_steps)
    plan = make_plan(paths, load_profile("rtx3060"))
    den = plan.components["denoiser"]
    assert den.runtime_precision == "int8" and set(den.variants) == {"int8", "fp16"}
    alone = den.variants["int8"].stats
    int8_need = alone.weights["engine"] + alone.activation_bytes + alone.io_bytes
    if float_steps:
        fp16 = den.variants["fp16"].stats
        assert den.also_open == ["fp16"] and den.need() == int8_need + fp16.weights["engine"] + fp16.activation_bytes + fp16.io_bytes
        assert any("keeps the int8 and fp16 engines resident together" in n for n in plan.notes)
        assert "with fp16 open beside it" in "\n".join(plan.summary())
    else:
        assert den.also_open == [] and den.need() == int8_need
    resident = sum(c.need() for c in plan.components.values())
    assert plan.vram.resident == resident
