"""Which NVIDIA GPU this machine has: NVML (nvidia-ml-py) first, nvidia-smi as the fallback.

Both are optional: with neither, or with no driver, the answer is "no GPU" and
`--gpu auto` builds the cpu target.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass

from t2vtrt.build.gpus.profiles import GpuProfile, list_profiles
from t2vtrt.runtime.errors import T2VError

GIB = 1 << 30


@dataclass(frozen=True)
class GpuInfo:
    """One detected device."""

    index: int
    name: str
    compute_capability: str  # "8.6"
    vram_gb: float  # total memory in GiB

    @property
    def sm(self) -> str:
        """8.6 -> sm86."""
        return "sm" + self.compute_capability.replace(".", "")

    def to_json(self) -> dict[str, object]:
        """The plan's and manifest's record of the device."""
        return {"index": self.index, "name": self.name, "compute_capability": self.compute_capability, "vram_gb": round(self.vram_gb, 2)}


def detect_gpus() -> list[GpuInfo]:
    """Every NVIDIA GPU visible here (empty when there is none or no driver)."""
    gpus = _from_nvml()
    if gpus is None:
        gpus = _from_nvidia_smi()
    return _visible(gpus or [])


def detect_gpu() -> GpuInfo | None:
    """The GPU a build or run here would use: the first visible one."""
    gpus = detect_gpus()
    return gpus[0] if gpus else None


def _from_nvml() -> list[GpuInfo] | None:
    """Query NVML; None when nvidia-ml-py or the driver is missing (so the caller falls back)."""
    try:
        import pynvml  # nvidia-ml-py; imported lazily so the build works without it
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return None
    try:
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetName(handle)
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
            total = pynvml.nvmlDeviceGetMemoryInfo(handle).total
            gpus.append(GpuInfo(index, name.decode() if isinstance(name, bytes) else str(name), f"{major}.{minor}", total / GIB))
        return gpus
    except pynvml.NVMLError:
        return None
    finally:
        pynvml.nvmlShutdown()


def _from_nvidia_smi() -> list[GpuInfo]:
    """Parse `nvidia-smi --query-gpu`; empty when the tool is absent or fails."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    cmd = [exe, "--query-gpu=index,name,compute_cap,memory.total", "--format=csv,noheader,nounits"]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if result.returncode != 0:
        return []
    return parse_nvidia_smi(result.stdout)


def parse_nvidia_smi(text: str) -> list[GpuInfo]:
    """Lines of 'index, name, compute_cap, memory MiB' -> GpuInfo (malformed lines are skipped)."""
    gpus = []
    for line in text.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 4 or not re.fullmatch(r"[0-9]+\.[0-9]+", parts[2]):
            continue
        try:
            gpus.append(GpuInfo(int(parts[0]), parts[1], parts[2], float(parts[3]) / 1024))
        except ValueError:
            continue
    return gpus


def _visible(gpus: list[GpuInfo]) -> list[GpuInfo]:
    """Honour CUDA_VISIBLE_DEVICES, which NVML and nvidia-smi ignore: set but empty hides every GPU (as in CUDA).

    A list of indices keeps those GPUs up to the first index that names none (CUDA ignores the rest);
    UUIDs or MIG names are left to CUDA (every GPU is reported).
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return gpus
    if not visible.strip():
        return []
    by_index, picked = {g.index: g for g in gpus}, []
    for item in visible.split(","):
        item = item.strip()
        if not re.fullmatch(r"-?[0-9]+", item):
            return picked if picked else (gpus if item.startswith(("GPU-", "MIG-")) else [])
        if int(item) not in by_index:
            return picked
        picked.append(by_index[int(item)])
    return picked


def match_profile(gpu: GpuInfo, profiles: list[GpuProfile] | None = None) -> GpuProfile:
    """The profile for a detected GPU: same capability, never more VRAM than it has; by name first."""
    profiles = list_profiles() if profiles is None else profiles
    # 10% slack: NVML reports a 12 GB card as slightly under 12 GiB.
    fitting = [p for p in profiles if p.compute_capability == gpu.compute_capability and p.vram_gb <= gpu.vram_gb * 1.1]
    named = [p for p in fitting if any(re.search(pattern, gpu.name, re.IGNORECASE) for pattern in p.match)]
    candidates = named or fitting
    if not candidates:
        raise T2VError(
            f"detected {gpu.name} ({gpu.sm}, {gpu.vram_gb:.0f} GiB) matches no GPU profile: pass --gpu <name> "
            f'(see `t2vtrt gpus`) or add a profile file for it to build/gpus/ (copy one with compute_capability = "{gpu.compute_capability}")'
        )
    return max(candidates, key=lambda p: p.vram_gb)


def auto_profile() -> str | None:
    """`--gpu auto`: the profile name of this machine's GPU, or None when there is no GPU."""
    gpu = detect_gpu()
    return None if gpu is None else match_profile(gpu).name
