"""What machine a bench ran on: ratios between frameworks move with the CPU's instruction sets."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

# Instruction sets the frameworks' kernels dispatch on: VNNI/AMX for ONNX Runtime's U8S8 kernels, AVX-512 for
# torch's MKL/oneDNN FP32 ones. The INT8 : diffusers ratio was 1.45x on one host (not recorded) and 1.83x on an
# AVX2-only AMD Zen 3, so a ratio means something only beside the host it was measured on.
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16")
PACKAGES = ("onnxruntime", "onnxruntime-gpu", "torch", "diffusers", "numpy")


def cpu_fields(cpuinfo: str) -> dict[str, Any]:
    """Model name, family/model and the ISA flags of interest from /proc/cpuinfo's first processor."""
    first = cpuinfo.split("\n\n")[0]
    fields = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in first.splitlines()) if k.strip()}
    flags = set(fields.get("flags", "").split())
    return {
        "cpu": fields.get("model name", platform.processor() or "unknown"),
        "cpu_family_model": f"{fields.get('cpu family', '?')}/{fields.get('model', '?')}",
        "isa": [f for f in ISA_FLAGS if f in flags],
    }


def host_info(cpuinfo_path: Path = Path("/proc/cpuinfo")) -> dict[str, Any]:
    """The CPU, core count and framework versions, for bench.json."""
    cpu = cpu_fields(cpuinfo_path.read_text()) if cpuinfo_path.is_file() else {"cpu": platform.processor() or "unknown"}
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {**cpu, "cores": os.cpu_count(), "machine": platform.machine(), "versions": versions}
