"""Shared fixtures: the tiny model built once per test session, through the real stages."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from t2vtrt.build.artifacts import ArtifactPaths


def _has_cuda() -> bool:
    """True when an NVIDIA driver answers (nvidia-smi exists and lists a GPU)."""
    import subprocess

    exe = shutil.which("nvidia-smi")
    if exe is None:
        return False
    return subprocess.run([exe, "-L"], capture_output=True).returncode == 0


_GPU_GATE: dict[str, str] = {}  # "fail" -> reason, on a GPU machine without the gpu extra


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`gpu` tests: skipped with the reason without a CUDA device, failed (not skipped) with one but no gpu extra."""
    if not any("gpu" in item.keywords for item in items):
        return
    from t2vtrt.build.gpus.check import gpu_test_gate, missing_gpu_extra

    gate = gpu_test_gate(_has_cuda(), missing_gpu_extra())
    if gate is None:
        return
    verdict, reason = gate
    if verdict == "fail":
        _GPU_GATE["fail"] = reason
        return
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(autouse=True)
def _gpu_extra_present(request: pytest.FixtureRequest) -> None:
    """Fail a `gpu` test on a GPU machine that lacks the gpu extra (a skip there would hide the missing install)."""
    if "fail" in _GPU_GATE and request.node.get_closest_marker("gpu") is not None:
        pytest.fail(_GPU_GATE["fail"], pytrace=False)


@pytest.fixture(scope="session")
def artifacts_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh artifacts/ root for the session."""
    return tmp_path_factory.mktemp("artifacts")


def built_for_cpu(model: str, artifacts_root: Path) -> ArtifactPaths:
    """An embedded model exported, patched and built for the cpu target (the `make engines` stages, FP32)."""
    from t2vtrt.build.engines.cpu import build_cpu_target
    from t2vtrt.build.export import run_export
    from t2vtrt.build.surgery.stage import run_surgery_stage

    run_export(model, artifacts_root)
    paths = ArtifactPaths(artifacts_root / model)
    run_surgery_stage(paths)
    build_cpu_target(paths)
    return paths


@pytest.fixture(scope="session")
def tiny_paths(artifacts_root: Path) -> ArtifactPaths:
    """The tiny model built for the cpu target."""
    return built_for_cpu("tiny", artifacts_root)


@pytest.fixture(scope="session")
def wan_paths(artifacts_root: Path) -> ArtifactPaths:
    """wan-tiny (the dynamo exporter) built for the cpu target."""
    return built_for_cpu("wan-tiny", artifacts_root)


@pytest.fixture(scope="session")
def tiny_engines(tiny_paths: ArtifactPaths) -> Path:
    """engines/cpu of the tiny model."""
    return tiny_paths.engines_dir("cpu")


@pytest.fixture()
def engines_copy(tiny_engines: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny cpu target that a test may corrupt."""
    dst = tmp_path / "cpu"
    shutil.copytree(tiny_engines, dst)
    return dst
