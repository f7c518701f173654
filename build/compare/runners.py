"""polygraphy runners: the FP32 ONNX reference and each built variant (ONNX Runtime, or TensorRT on a GPU)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

REFERENCE = "reference"  # runner name of the FP32 ONNX graph every variant is compared with
GOLDEN = "golden"  # runner name of the stored reference outputs


def runner_name(component: str, precision: str) -> str:
    """A variant's runner name, as the report and error messages show it."""
    return f"{component}:{precision}"


def onnx_runner(path: Path, name: str) -> Any:
    """A lazy ONNX Runtime runner on CPU (the session is built when the runner activates)."""
    import onnxruntime as ort
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx

    # Errors only: Q/DQ graphs make ORT warn about every unused zero-point initializer it drops.
    ort.set_default_logger_severity(3)
    return OnnxrtRunner(SessionFromOnnx(str(path), providers=["cpu"]), name=name)


def tensorrt_available() -> bool:
    """True when the tensorrt module imports and a CUDA driver answers."""
    if importlib.util.find_spec("tensorrt") is None:
        return False
    from t2vtrt.build.engines import resolve_target

    return resolve_target("auto") != "cpu"


def trt_runner(path: Path, name: str) -> Any:
    """A lazy TensorRT runner over a serialized engine (imported only here: CPU machines lack tensorrt)."""
    from polygraphy.backend.trt import EngineFromPath, TrtRunner

    return TrtRunner(EngineFromPath(str(path)), name=name)


def variant_runner(path: Path, backend: str, name: str) -> Any | None:
    """The runner for one manifest variant; None when this machine cannot run its backend."""
    if backend == "onnxruntime":
        return onnx_runner(path, name)
    if backend == "tensorrt" and tensorrt_available():
        return trt_runner(path, name)
    return None
