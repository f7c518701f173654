"""GPU detection: no GPU means cpu; a detected GPU maps to the right profile or to a one-line error."""

from __future__ import annotations

import subprocess
import sys

import pytest

from t2vtrt.build.gpus import detect
from t2vtrt.build.gpus.detect import GpuInfo, match_profile, parse_nvidia_smi
from t2vtrt.runtime.errors import T2VError


@pytest.fixture()
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine without NVML answers and without nvidia-smi."""
    monkeypatch.setattr(detect, "_from_nvml", lambda: None)
    monkeypatch.setattr(detect.shutil, "which", lambda name: None)


def test_no_gpu_means_no_profile(no_gpu: None) -> None:
    """detect_gpus is empty, auto_profile None, and `--gpu auto` resolves to cpu."""
    from t2vtrt.build.engines import resolve_target

    assert detect.detect_gpus() == []
    assert detect.detect_gpu() is None
    assert detect.auto_profile() is None
    assert resolve_target("auto") == "cpu"
    assert resolve_target("rtx3060") == "rtx3060"


def _gpus_per_nvidia_smi() -> int:
    """How many GPUs the driver itself lists (0 without nvidia-smi or a driver)."""
    import shutil

    exe = shutil.which("nvidia-smi")
    if exe is None:
        return 0
    listed = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=60)
    return sum(line.startswith("GPU ") for line in listed.stdout.splitlines()) if listed.returncode == 0 else 0


def test_nvml_without_driver_falls_back_quietly() -> None:
    """Detection in a fresh process finds exactly the GPUs the driver lists (none here), without raising or printing."""
    result = subprocess.run(
        [sys.executable, "-c", "from t2vtrt.build.gpus.detect import detect_gpus; print(len(detect_gpus()))"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.strip()) == _gpus_per_nvidia_smi()
    assert result.stderr == ""


def test_nvidia_smi_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without NVML, nvidia-smi's CSV is parsed."""
    monkeypatch.setattr(detect, "_from_nvml", lambda: None)
    monkeypatch.setattr(detect.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    out = "0, NVIDIA GeForce RTX 3060, 8.6, 12288\n"
    monkeypatch.setattr(detect.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, out, ""))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert detect.detect_gpus() == [GpuInfo(0, "NVIDIA GeForce RTX 3060", "8.6", 12.0)]
    assert detect.auto_profile() == "rtx3060"


def test_gpu_without_tensorrt_resolves_auto_to_cpu(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A detected GPU but no tensorrt module: `auto` builds the cpu target and says what to install."""
    from t2vtrt.build import engines

    monkeypatch.setattr(detect, "detect_gpu", lambda: GpuInfo(0, "NVIDIA GeForce RTX 3060", "8.6", 12.0))
    monkeypatch.setattr(engines.importlib.util, "find_spec", lambda name: None)
    assert engines.resolve_target("auto") == "cpu"
    assert "rtx3060" in capsys.readouterr().err
    monkeypatch.setattr(engines.importlib.util, "find_spec", lambda name: object())
    assert engines.resolve_target("auto") == "rtx3060"


def test_parse_nvidia_smi_skips_malformed_lines() -> None:
    """Only well-formed lines count."""
    text = "0, NVIDIA H100 80GB HBM3, 9.0, 81559\n1, broken line\n2, NVIDIA L4, [N/A], 23034\n"
    assert parse_nvidia_smi(text) == [GpuInfo(0, "NVIDIA H100 80GB HBM3", "9.0", 81559 / 1024)]


def test_cuda_visible_devices_picks_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """A numeric CUDA_VISIBLE_DEVICES reorders/filters what NVML lists."""
    gpus = [GpuInfo(0, "NVIDIA T4", "7.5", 15.0), GpuInfo(1, "NVIDIA L4", "8.9", 22.5)]
    monkeypatch.setattr(detect, "_from_nvml", lambda: gpus)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert detect.detect_gpu() == gpus[1]


@pytest.mark.parametrize(
    ("visible", "indices"),
    [
        ("", []),  # set but empty: CUDA sees no GPU, so neither do we
        (" ", []),
        ("1,0", [1, 0]),
        ("0,7,1", [0]),  # CUDA stops at the first index that names no device
        ("-1", []),
        ("GPU-5c1a2b3c-0000-0000-0000-000000000000", [0, 1]),  # UUIDs: left to CUDA
        ("foo", []),
    ],
)
def test_cuda_visible_devices_as_cuda_reads_it(monkeypatch: pytest.MonkeyPatch, visible: str, indices: list[int]) -> None:
    """CUDA_VISIBLE_DEVICES values as the CUDA runtime reads them."""
    gpus = [GpuInfo(0, "NVIDIA T4", "7.5", 15.0), GpuInfo(1, "NVIDIA L4", "8.9", 22.5)]
    monkeypatch.setattr(detect, "_from_nvml", lambda: gpus)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert [g.index for g in detect.detect_gpus()] == indices
    assert detect.detect_gpu() == (gpus[indices[0]] if indices else None)


@pytest.mark.parametrize(
    ("name", "cc", "vram", "profile"),
    [
        ("NVIDIA GeForce RTX 3060", "8.6", 11.76, "rtx3060"),
        ("NVIDIA GeForce RTX 3090", "8.6", 23.7, "rtx3090"),
        ("NVIDIA GeForce RTX 4060", "8.9", 7.6, "rtx4060"),
        ("NVIDIA GeForce RTX 4090", "8.9", 23.6, "rtx4090"),
        ("NVIDIA L4", "8.9", 22.5, "l4"),
        ("Tesla T4", "7.5", 15.0, "t4"),
        ("NVIDIA A100-SXM4-40GB", "8.0", 39.4, "a100-40gb"),
        ("NVIDIA A100 80GB PCIe", "8.0", 79.2, "a100-80gb"),
        ("NVIDIA H100 80GB HBM3", "9.0", 79.6, "h100"),
        ("NVIDIA A10", "8.6", 22.0, "rtx3090"),  # unnamed sm86 24 GB card: the closest profile of its capability
    ],
)
def test_match_profile(name: str, cc: str, vram: float, profile: str) -> None:
    """Name first, then capability and never more VRAM than the card has."""
    assert match_profile(GpuInfo(0, name, cc, vram)).name == profile


def test_unknown_gpu_is_one_line_error() -> None:
    """An sm86 card with 8 GB (RTX 3060 Ti) fits no profile: say so and how to add one."""
    with pytest.raises(T2VError, match=r"RTX 3060 Ti \(sm86, 8 GiB\) matches no GPU profile.*--gpu <name>.*compute_capability = \"8\.6\""):
        match_profile(GpuInfo(0, "NVIDIA GeForce RTX 3060 Ti", "8.6", 7.8))
