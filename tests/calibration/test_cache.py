"""The legacy TensorRT calibration cache: format, version header, round trip, malformed files."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from t2vtrt.calibration.cache import format_cache, read_cache, version_code, write_cache
from t2vtrt.runtime.errors import T2VError

SCALES = {"/model/conv_in/Conv_output_0": 0.0123, "sample": 0.031496062, "x: with colon": 1.5e-5}


def test_version_code() -> None:
    """TensorRT 10 writes MMmmpp, TensorRT 8 Mmpp."""
    assert version_code("10.3.0") == 100300
    assert version_code("10.13.2.6") == 101302
    assert version_code("8.6.1") == 8601


def test_format_is_what_tensorrt_writes() -> None:
    """Header line, then `name: <big-endian float32 hex>` per tensor."""
    text = format_cache({"sample": 1.0}, "10.3.0")
    assert text == f"TRT-100300-EntropyCalibration2\nsample: {struct.pack('>f', 1.0).hex()}\n"
    assert text.splitlines()[1] == "sample: 3f800000"


def test_round_trip_keeps_float32_scales(tmp_path: Path) -> None:
    """Write then read: every scale survives exactly (as float32)."""
    path = write_cache(tmp_path / "c.cache", SCALES, "10.3.0")
    header, scales = read_cache(path)
    assert header == "TRT-100300-EntropyCalibration2"
    assert scales == {k: struct.unpack(">f", struct.pack(">f", v))[0] for k, v in SCALES.items()}


def test_modelopt_reads_our_cache(tmp_path: Path) -> None:
    """ModelOpt's own cache importer (behind calibration_cache_path) gets the same scales."""
    calib_utils = pytest.importorskip("modelopt.onnx.quantization.calib_utils")
    path = write_cache(tmp_path / "c.cache", {k: v for k, v in SCALES.items() if ": " not in k}, "10.3.0")
    imported = calib_utils.import_scales_from_calib_cache(str(path))
    assert imported == {f"{k}_scale": v for k, v in read_cache(path)[1].items()}


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "not a TensorRT calibration cache"),
        ("hello\nx: 3f800000\n", "not a TensorRT calibration cache"),
        ("TRT-100300-EntropyCalibration2\n", "names no tensors"),
        ("TRT-100300-EntropyCalibration2\nx: 3f80\n", "8 hex digits"),
    ],
)
def test_malformed_caches(tmp_path: Path, text: str, message: str) -> None:
    """Each malformed cache is one line naming the problem."""
    path = tmp_path / "bad.cache"
    path.write_text(text)
    with pytest.raises(T2VError, match=message) as info:
        read_cache(path)
    assert "\n" not in str(info.value)


def test_empty_cache_is_not_written(tmp_path: Path) -> None:
    """No scales: refuse, and leave nothing behind."""
    with pytest.raises(T2VError):
        write_cache(tmp_path / "c.cache", {}, "10.3.0")
    assert list(tmp_path.iterdir()) == []
