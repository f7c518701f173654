"""The TensorRT target around the builder: no-GPU exit, refusals, device checks, manifest; real builds on a GPU only."""

from __future__ import annotations

import json
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from t2vtrt.build.artifacts import ArtifactPaths
from t2vtrt.build.engines import tensorrt as trtmod
from t2vtrt.build.engines.plan import make_plan
from t2vtrt.build.gpus.detect import GpuInfo
from t2vtrt.build.gpus.profiles import load_profile
from t2vtrt.runtime.errors import T2VError
from t2vtrt.runtime.manifest import load_manifest


import synthetic_artifacts as synthetic  # tests/support (pytest pythonpath)

RTX3060 = GpuInfo(0, "NVIDIA GeForce RTX 3060", "8.6", 11.8)
RTX4090 = GpuInfo(0, "NVIDIA GeForce RTX 4090", "8.9", 23.6)


@pytest.fixture()
def paths(tmp_path: Path) -> ArtifactPaths:
    """Synthetic tiny artifacts (export.json + *.opt.onnx)."""
    return synthetic.make_artifacts(tmp_path / "artifacts", "tiny")


@pytest.fixture()
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Detection finds nothing (whatever this machine has)."""
    monkeypatch.setattr(trtmod, "detect_gpu", lambda: None)


@pytest.fixture()
def no_tensorrt(monkeypatch: pytest.MonkeyPatch) -> None:
    """`import tensorrt` fails, as on any machine without it."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)


def test_no_gpu_writes_plan_and_onnx_then_exits_with_one_line(
    paths: ArtifactPaths, no_gpu: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`t2vtrt engines --gpu rtx3060` here: plan.json + TensorRT-ready ONNX, exit 2, the sm86 line with the exact command."""
    from t2vtrt.cli import main

    root = paths.root.parent
    monkeypatch.setattr(sys, "argv", ["t2vtrt", "-q", "engines", "--model", "tiny", "--artifacts", str(root), "--gpu", "rtx3060"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("error: TensorRT engines for rtx3060 must be built on an sm86 GPU")
    assert f"t2vtrt engines --model tiny --artifacts {root} --gpu rtx3060" in err and "pip install -e '.[build-tools,gpu]'" in err
    target = paths.engines_dir("rtx3060")
    plan = json.loads((target / "plan.json").read_text())
    assert plan["target"] == "rtx3060" and plan["gpu"]["compute_capability"] == "8.6"
    assert sorted(p.name for p in (target / "onnx").iterdir()) == ["denoiser.opt.onnx", "text_encoder.opt.onnx", "vae_decoder.opt.onnx"]
    assert not (target / "manifest.json").exists()


def test_dry_run_prints_and_writes_the_plan_only(paths: ArtifactPaths, capsys: pytest.CaptureFixture[str]) -> None:
    """--dry-run: plan.json and a summary on stdout; no ONNX copies, no GPU needed."""
    result = trtmod.build_gpu_target(paths, "rtx4060", dry_run=True)
    assert result == paths.engines_dir("rtx4060") / "plan.json" and result.is_file()
    out = capsys.readouterr().out
    assert out.startswith("plan for rtx4060") and "VRAM:" in out and "fits" in out
    assert not (paths.engines_dir("rtx4060") / "onnx").exists()


def test_missing_external_weights_are_one_line(tmp_path: Path, no_gpu: None) -> None:
    """A graph whose external weights file is gone cannot be made portable: say which file and the fix."""
    paths = synthetic.make_artifacts(tmp_path / "artifacts", "tiny", extra_weights={"denoiser": 16})
    with pytest.raises(T2VError, match=r"denoiser\.opt\.onnx keeps weights in .*denoiser_big\.weights, which is missing"):
        trtmod.build_gpu_target(paths, "rtx3060", quiet=True)


def test_cpu_target_refuses_gpu_only_flags(paths: ArtifactPaths) -> None:
    """--dry-run etc. belong to GPU targets."""
    from t2vtrt.build.engines import build_engines

    with pytest.raises(T2VError, match="apply to GPU targets"):
        build_engines(paths, "cpu", dry_run=True)


def test_refuses_a_plan_that_does_not_fit_unless_low_vram(tmp_path: Path, no_gpu: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Resident does not fit a 3 GiB card: refused with what would; --low-vram fits and reaches the GPU check."""
    # The big weights are dims only (their external files do not exist): skip the portable copy.
    monkeypatch.setattr(trtmod, "write_portable_onnx", lambda paths, plan: paths.engines_dir(plan.target) / "onnx")
    quarter = (1 << 30) // 4
    paths = synthetic.make_artifacts(tmp_path / "artifacts", "tiny", extra_weights={"text_encoder": quarter * 3 // 4, "denoiser": quarter * 3 // 4})
    profile = synthetic.write_profile(tmp_path, "small", 3.0)
    with pytest.raises(T2VError, match=r"need about 3\.\d GiB with every engine resident but the profile has 3 GiB.*would fit: --low-vram"):
        trtmod.build_gpu_target(paths, str(profile), quiet=True)
    with pytest.raises(T2VError, match=r"must be built on an sm86 GPU.*--gpu .*small\.toml --low-vram"):
        trtmod.build_gpu_target(paths, str(profile), quiet=True, low_vram=True)


def test_gpu_of_another_capability_is_refused(paths: ArtifactPaths, monkeypatch: pytest.MonkeyPatch, no_tensorrt: None) -> None:
    """An sm89 card for the sm86 profile: refused unless --hardware-compat ampere_plus (which then needs TensorRT)."""
    monkeypatch.setattr(trtmod, "detect_gpu", lambda: RTX4090)
    with pytest.raises(
        T2VError,
        match=r"GPU is NVIDIA GeForce RTX 4090 \(sm89\) but profile rtx3060 is sm86: build with --gpu rtx4090, "
        r"or pass --hardware-compat ampere_plus",
    ):
        trtmod.build_gpu_target(paths, "rtx3060", quiet=True)
    with pytest.raises(T2VError, match=r"TensorRT is not installed.*pip install -e '\.\[build-tools,gpu\]'"):
        trtmod.build_gpu_target(paths, "rtx3060", quiet=True, hardware_compat="ampere_plus")


def test_ampere_plus_does_not_cover_turing() -> None:
    """A T4 (sm75) cannot stand in for an sm86 profile, whatever the flag."""
    with pytest.raises(T2VError, match=r"\(sm75\) but profile rtx3060 is sm86: build with --gpu t4$"):
        trtmod.check_device(GpuInfo(0, "Tesla T4", "7.5", 15.0), load_profile("rtx3060"), "ampere_plus")
    trtmod.check_device(RTX3060, load_profile("rtx3060"), "none")


def fake_trt(version: str = "10.13.3.9", strongly_typed: bool = True) -> types.SimpleNamespace:
    """The few tensorrt names the build helpers read."""
    flags = types.SimpleNamespace(**({"STRONGLY_TYPED": 1} if strongly_typed else {}))
    return types.SimpleNamespace(
        __version__=version,
        NetworkDefinitionCreationFlag=flags,
        MemoryPoolType=types.SimpleNamespace(WORKSPACE="ws", TACTIC_SHARED_MEMORY="tsm"),
        HardwareCompatibilityLevel=types.SimpleNamespace(NONE=0, AMPERE_PLUS=1),
    )


def test_builder_helpers_for_tensorrt_10_and_11() -> None:
    """Strongly typed flag on 10 (off on 11, where it is implied); pools in bytes; missing levels are one line."""
    assert trtmod.strongly_typed_flag(fake_trt("10.13.3.9")) is True
    assert trtmod.strongly_typed_flag(fake_trt("11.0.0.1")) is False
    assert trtmod.strongly_typed_flag(fake_trt("10.0.1", strongly_typed=False)) is False
    assert trtmod.memory_pools(fake_trt(), {"workspace_mib": 2, "tactic_shared_memory_mib": 1}) == {"ws": 2 << 20, "tsm": 1 << 20}
    assert trtmod.hardware_level(fake_trt(), "ampere_plus") == 1
    with pytest.raises(T2VError, match="has no hardware-compatibility level 'same_compute_capability'"):
        trtmod.hardware_level(fake_trt(), "same_compute_capability")


def test_polygraphy_loaders_get_the_plan_settings(paths: ArtifactPaths, tmp_path: Path, no_tensorrt: None) -> None:
    """The loaders accept our arguments (polygraphy's real signatures) and carry profile, cache, levels, no precision flags."""
    plan = make_plan(paths, load_profile("rtx3060"), version_compatible=True, hardware_compat="ampere_plus", tensorrt_version="10.13.3.9")
    component = plan.components["denoiser"]
    loader = trtmod.engine_loader(fake_trt(), component.variants["fp32"].source, component.shapes, plan.builder, tmp_path / "t.cache")
    config, network = loader._config, loader._network
    assert network.path.endswith("denoiser.opt.onnx") and network.strongly_typed is True
    sample = config.profiles[0]["sample"]
    assert [list(sample.min), list(sample.opt), list(sample.max)] == component.shapes["sample"]
    assert config.timing_cache_path == loader.timing_cache_path == str(tmp_path / "t.cache")
    assert config.builder_optimization_level == 3 and config.hardware_compatibility_level == 1
    # Version-compatible with the lean runtime embedded (TensorRT's default): a later TensorRT loads it unaided.
    assert config.version_compatible and not config.exclude_lean_runtime and plan.builder["exclude_lean_runtime"] is False
    assert config.memory_pool_limits == {"ws": 3072 << 20}
    assert not (config.fp16 or config.int8 or config.bf16 or config.fp8 or config.tf32)


def test_build_import_refuses_a_lean_process_and_missing_polygraphy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Never a second libnvinfer beside tensorrt_lean; tensorrt without polygraphy names the build extra."""
    monkeypatch.setitem(sys.modules, "tensorrt_lean", types.ModuleType("tensorrt_lean"))
    with pytest.raises(T2VError, match="already runs engines with tensorrt_lean, which cannot build: build the engines in a separate process"):
        trtmod.import_tensorrt()
    monkeypatch.delitem(sys.modules, "tensorrt_lean")
    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))
    monkeypatch.setitem(sys.modules, "polygraphy.backend.trt", None)
    with pytest.raises(T2VError, match=r"^polygraphy is not installed, so engines cannot be built here: pip install -e '\.\[build-tools,gpu\]'"):
        trtmod.import_tensorrt()


def test_builder_shares_the_runtime_logger(monkeypatch: pytest.MonkeyPatch) -> None:
    """polygraphy's loaders get the process logger a runtime session made first; otherwise polygraphy makes its own."""
    from polygraphy.backend.trt import util

    from t2vtrt.runtime.backends import tensorrt as backend

    monkeypatch.setattr(util, "TRT_LOGGER", None)
    monkeypatch.setattr(backend, "_PROCESS", {})
    trtmod.share_logger(fake_trt())
    assert util.TRT_LOGGER is None
    made = object()
    monkeypatch.setattr(backend, "_PROCESS", {"logger": made})
    trtmod.share_logger(fake_trt())
    assert util.TRT_LOGGER is made


def test_build_flow_writes_engines_plan_and_a_valid_manifest(paths: ArtifactPaths, monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole build with the builder call stubbed: engines named per plan, plan.json, tensorrt manifest by the schema."""
    monkeypatch.setattr(trtmod, "detect_gpu", lambda: RTX3060)
    monkeypatch.setattr(trtmod, "import_tensorrt", lambda: fake_trt())
    calls = []

    def fake_build(trt, source, shapes, builder, cache, quiet):  # noqa: ANN001, ANN202
        calls.append((source.name, builder["hardware_compatibility"], cache.name))
        return b"engine:" + source.name.encode()

    monkeypatch.setattr(trtmod, "build_engine", fake_build)
    manifest_path = trtmod.build_gpu_target(paths, "rtx3060", quiet=True, version_compatible=True)
    manifest = load_manifest(manifest_path.parent)  # schema + every hash
    data = manifest.data
    assert data["target"] == {
        "name": "rtx3060",
        "backend": "tensorrt",
        "tensorrt_version": "10.13.3.9",
        "gpu": {"name": "NVIDIA GeForce RTX 3060", "compute_capability": "8.6", "vram_gb": 12.0},
        "hardware_compatibility": "none",
        "version_compatible": True,
    }
    variant = data["components"]["denoiser"]["variants"]["fp32"]
    assert variant["file"] == "denoiser.fp32.trt10.13.3.sm86.plan" and variant["backend"] == "tensorrt"
    assert variant["compute_capability"] == "8.6"
    assert variant["note"] == "version-compatible, lean runtime embedded: runs on tensorrt 10.13.3.9 or later, or tensorrt_lean 10.13.3.9 exactly"
    assert (manifest_path.parent / "plan.json").is_file() and (manifest_path.parent / "tokenizer.json").is_file()
    assert {c[2] for c in calls} == {"rtx3060.trt10.13.3.cache"} and len(calls) == 3
    for key in ("frames", "height", "width"):
        lo, _, hi = data["ranges"][key]
        assert lo <= data["defaults"][key] <= hi


def _gate_vouching(paths: ArtifactPaths, schedule: dict | None) -> None:
    """A calib/gate.json that passed denoiser.int8.onnx as it is on disk, with this step schedule."""
    from t2vtrt.runtime.files import sha256_file

    graph = paths.onnx("denoiser", "int8")
    paths.calib_dir.mkdir(parents=True, exist_ok=True)
    (paths.calib_dir / "gate.json").write_text(
        json.dumps(
            {
                "gated": True,
                "passed": True,
                "graphs": {graph.name: sha256_file(graph)},
                "variants": [{"variant": "int8-qdq", "passed": True, "schedule": schedule, "float_steps": 2, "steps": 10}],
            }
        )
    )


def _fake_build(plan, target: Path) -> dict:  # type: ignore[no-untyped-def]
    """Placeholder engine files for every planned variant: component -> precision -> file."""
    target.mkdir()
    built = {}
    for name, component in plan.components.items():
        built[name] = {}
        for precision, variant in component.variants.items():
            (target / variant.engine).write_bytes(b"x")
            built[name][precision] = variant.engine
    return built


def test_manifest_with_narrowed_ranges_and_int8(paths: ArtifactPaths, tmp_path: Path) -> None:
    """rtx4060 narrows batch/frames: the manifest's ranges, axes and defaults follow; int8 is the default precision."""
    shutil.copyfile(paths.onnx("denoiser", "opt"), paths.onnx("denoiser", "int8"))
    _gate_vouching(paths, None)
    plan = make_plan(paths, load_profile("rtx4060"), tensorrt_version="10.13.3.9")
    target = tmp_path / "target"
    built = _fake_build(plan, target)
    trtmod.write_gpu_manifest(paths, plan, target, built, {"name": "RTX 4060", "compute_capability": "8.9", "vram_gb": 8}, "10.13.3.9")
    data = load_manifest(target).data
    assert data["ranges"]["batch"] == [1, 1, 1] and data["ranges"]["frames"] == [8, 16, 16]
    assert data["components"]["denoiser"]["axes"]["batch"] == [1, 2, 2]
    assert data["defaults"]["precision"] == "int8" and data["defaults"]["frames"] == 8
    assert set(data["components"]["denoiser"]["variants"]) == {"int8"}


def test_int8_engine_ships_the_gates_step_schedule(paths: ArtifactPaths, tmp_path: Path) -> None:
    """The INT8 denoiser engine carries the gate's schedule with the FP16 engine as fallback; without one, refused."""
    shutil.copyfile(paths.onnx("denoiser", "opt"), paths.onnx("denoiser", "int8"))
    _gate_vouching(paths, {"fallback": "fp32", "above": 500.0, "below": None})
    plan = make_plan(paths, load_profile("rtx4060"), tensorrt_version="10.13.3.9")
    gpu = {"name": "RTX 4060", "compute_capability": "8.9", "vram_gb": 8}
    with pytest.raises(T2VError, match="none was built for this target"):
        trtmod.write_gpu_manifest(paths, plan, tmp_path / "a", _fake_build(plan, tmp_path / "a"), gpu, "10.13.3.9")
    shutil.copyfile(paths.onnx("denoiser", "opt"), paths.onnx("denoiser", "fp16"))
    plan = make_plan(paths, load_profile("rtx4060"), tensorrt_version="10.13.3.9")
    built = _fake_build(plan, tmp_path / "b")
    assert set(built["denoiser"]) == {"int8", "fp16"}
    trtmod.write_gpu_manifest(paths, plan, tmp_path / "b", built, gpu, "10.13.3.9")
    schedule = load_manifest(tmp_path / "b").data["components"]["denoiser"]["variants"]["int8"]["schedule"]
    assert schedule["fallback"] == "fp16" and schedule["above"] == 500.0


def test_rebuild_command_is_exact(tmp_path: Path) -> None:
    """Every flag that shaped the plan is in the command, shell-quoted."""
    paths = ArtifactPaths(tmp_path / "my artifacts" / "tiny")
    command = trtmod.rebuild_command(paths, "rtx3060", True, True, "ampere_plus")
    assert command == (
        f"t2vtrt engines --model tiny --artifacts '{tmp_path / 'my artifacts'}' --gpu rtx3060 "
        "--low-vram --version-compatible --hardware-compat ampere_plus"
    )


# --------------------------------------------------------------------------- GPU only


@pytest.mark.gpu
def test_tiny_engines_match_onnxruntime(tiny_paths: ArtifactPaths, tmp_path: Path) -> None:
    """Build the tiny model's engines for this GPU; each engine's outputs match the FP32 ONNX on ONNX Runtime."""
    import onnxruntime as ort

    from t2vtrt.build.gpus.check import compare_metrics, load_tolerances, sample_feeds
    from t2vtrt.build.gpus.detect import auto_profile
    from t2vtrt.runtime.backends import open_session

    paths = ArtifactPaths(tmp_path / "tiny")
    shutil.copytree(tiny_paths.onnx_dir, paths.onnx_dir)
    manifest = load_manifest(trtmod.build_gpu_target(paths, auto_profile(), quiet=True).parent)
    tolerances = load_tolerances()
    for name, component in manifest.data["components"].items():
        feeds = sample_feeds(component)
        reference = ort.InferenceSession(str(paths.onnx(name, "opt")), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
        for precision in component["variants"]:
            session = open_session(manifest, name, precision)
            out = session.run(feeds)[component["outputs"][0]["name"]]
            session.close()
            metrics = compare_metrics(out, reference)
            assert out.shape == reference.shape and np.isfinite(out).all()
            assert metrics["rel_l2"] <= tolerances[precision]["max_rel_l2"], (name, precision, metrics)
