"""The legacy TensorRT calibration cache: an export of the activation scales for TensorRT 10 users.

Format (what IInt8EntropyCalibrator2 writes and ModelOpt's calibration_cache_path reads):
    TRT-<version code>-EntropyCalibration2
    <tensor name>: <scale as big-endian IEEE-754 float32, 8 hex digits>
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

from t2vtrt.runtime.errors import T2VError
from t2vtrt.runtime.files import atomic_path

# TensorRT checks the header against its own version; without TensorRT installed we write this one.
DEFAULT_TRT_VERSION = "10.13.0"
HEADER = re.compile(r"^TRT-(\d+)-(\w+)$")


def version_code(version: str) -> int:
    """TensorRT's NV_TENSORRT_VERSION: MMmmpp from 10 on (100300 = 10.3.0), Mmpp before (8601 = 8.6.1)."""
    parts = [int(p) for p in (version.split(".") + ["0", "0"])[:3]]
    major, minor, patch = parts
    return major * 10000 + minor * 100 + patch if major >= 10 else major * 1000 + minor * 100 + patch


def installed_trt_version() -> str:
    """The installed TensorRT's version, else DEFAULT_TRT_VERSION."""
    import importlib.metadata

    for dist in ("tensorrt", "tensorrt-cu12", "tensorrt-lean"):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return DEFAULT_TRT_VERSION


def format_cache(scales: dict[str, float], trt_version: str, algorithm: str = "EntropyCalibration2") -> str:
    """The cache text for `scales` (tensor -> per-tensor scale), tensors sorted for stable diffs."""
    lines = [f"TRT-{version_code(trt_version)}-{algorithm}"]
    lines += [f"{name}: {struct.pack('>f', float(scale)).hex()}" for name, scale in sorted(scales.items())]
    return "\n".join(lines) + "\n"


def write_cache(path: Path, scales: dict[str, float], trt_version: str | None = None) -> Path:
    """Write the cache atomically."""
    if not scales:
        raise T2VError(f"refusing to write an empty calibration cache {path}")
    with atomic_path(path) as tmp:
        tmp.write_text(format_cache(scales, trt_version or installed_trt_version()))
    return path


def read_cache(path: Path) -> tuple[str, dict[str, float]]:
    """(header, tensor -> scale) of a cache file; one-line errors for anything malformed."""
    if not Path(path).is_file():
        raise T2VError(f"calibration cache {path} does not exist")
    lines = [line.rstrip("\r") for line in Path(path).read_text().splitlines() if line.strip()]
    if not lines or not HEADER.match(lines[0]):
        raise T2VError(f"{path} is not a TensorRT calibration cache: the first line must look like TRT-100300-EntropyCalibration2")
    scales: dict[str, float] = {}
    for number, line in enumerate(lines[1:], start=2):
        name, sep, value = line.rpartition(": ")
        if not sep or not re.fullmatch(r"[0-9a-fA-F]{8}", value):
            raise T2VError(f"{path}:{number} is not '<tensor>: <8 hex digits>': {line[:80]!r}")
        scales[name] = struct.unpack(">f", bytes.fromhex(value))[0]
    if not scales:
        raise T2VError(f"calibration cache {path} names no tensors")
    return lines[0], scales
