"""Run the runtime's own pipeline straight over onnx/*.opt.onnx, before any target is built.

Calibration needs the FP32 pipeline (to capture real denoiser inputs) and, for the gate, the same
pipeline with the denoiser swapped for a quantized graph. An in-memory manifest rooted at onnx/
gives both without writing engines/.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from t2vtrt.build.artifacts import ArtifactPaths, components_of, read_export_info
from t2vtrt.calibration.settings import Generation
from t2vtrt.runtime.manifest import Manifest
from t2vtrt.runtime.pipeline import Pipeline

TARGET = {"name": "calibration", "backend": "onnxruntime", "gpu": None, "tensorrt_version": None}


def _variant(file: str, precision: str) -> dict[str, Any]:
    """A manifest variant entry (unhashed: the files are this build's own)."""
    return {"file": file, "precision": precision, "backend": "onnxruntime"}


def onnx_manifest(paths: ArtifactPaths, denoiser: Path | None = None, precision: str = "fp32", generation: Generation | None = None) -> Manifest:
    """A manifest over onnx/<c>.opt.onnx; `denoiser` adds a denoiser graph under `precision` beside FP32's.

    `generation` replaces default steps / frames / height / width ("min": the profile's minimum): what a
    calibration budget captures and gates at (calibration/settings.py).
    """
    from t2vtrt.build.engines.manifest import build_manifest

    info = read_export_info(paths)
    variants = {c: {"fp32": _variant(paths.onnx(c, "opt").name, "fp32")} for c in components_of(info)}
    if denoiser is not None:
        # An absolute path survives Manifest.path's `root / file`; the FP32 graph stays for step schedules.
        variants["denoiser"][precision] = _variant(str(Path(denoiser).resolve()), precision)
    tokenizer = info["tokenizer"]
    data = build_manifest(info, TARGET, variants, tokenizer["file"], tokenizer["sha256"], default_precision=precision)
    for key, value in (generation or {}).items():
        data["defaults"][key] = data["ranges"][key][0] if value == "min" else int(value)
    return Manifest(data, paths.onnx_dir)


def onnx_pipeline(
    paths: ArtifactPaths, denoiser: Path | None = None, precision: str = "fp32", generation: Generation | None = None, **options: Any
) -> Pipeline:
    """The runtime Pipeline over the patched graphs (optionally with a quantized denoiser)."""
    return Pipeline(onnx_manifest(paths, denoiser, precision, generation), precision=precision, **options)
