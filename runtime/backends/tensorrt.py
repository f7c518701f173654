"""TensorRT backend: deserialize an engine, run it on device buffers, return numpy (no torch).

One TensorRT module per process (tensorrt, else tensorrt_lean; never both: each loads its own
libnvinfer and TensorRT keeps one logger per process) and the CUDA bindings (cuda-python's
cuda.bindings.runtime / cuda.cudart, else polygraphy's ctypes wrapper) are imported when a
session opens, never at module level: the runtime imports without them.
Inputs are copied host -> device and outputs back every call; the sampler loop stays numpy.

Which TensorRT runs which engine (TensorRT's own rules, "Version Compatibility" in its guide):
- a plain engine: the TensorRT it was built with (same major.minor.patch), full runtime only;
- a version-compatible engine carries a copy of its build's lean runtime (the builder's default,
  kept on purpose): the full runtime of that version or any later one loads it and hands it to
  that embedded copy (engine_host_code_allowed); tensorrt_lean runs it only at the build's version.
"""

from __future__ import annotations

import ctypes
import importlib
import sys
from pathlib import Path
from typing import Any

import numpy as np

from t2vtrt.runtime.errors import T2VError
from t2vtrt.runtime.manifest import Manifest

INSTALL_HINT = (
    "pip install -e '.[gpu]' (CUDA 12, driver r535+) or '.[gpu-cu13]' (CUDA 13, driver r580+); "
    "tensorrt-lean instead of tensorrt for a runtime-only service"
)
MODULES = ("tensorrt", "tensorrt_lean")  # preference order; a process keeps whichever it loaded first
# trt.DataType name -> numpy dtype (kept here: tensorrt_lean may lack trt.nptype); ml_dtypes ones load on use.
DTYPES = {"FLOAT": np.float32, "HALF": np.float16, "INT32": np.int32, "INT64": np.int64, "INT8": np.int8, "UINT8": np.uint8, "BOOL": np.bool_}
ML_DTYPES = {"BF16": "bfloat16", "FP8": "float8_e4m3fn"}
# The process-wide TensorRT logger, made once (TensorRT keeps the first and warns on every later one).
_PROCESS: dict[str, Any] = {}


def import_tensorrt() -> Any:
    """The process's TensorRT module: the one already loaded, else tensorrt, else tensorrt_lean."""
    for name in MODULES:
        if sys.modules.get(name) is not None:
            return sys.modules[name]
    for name in MODULES:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise T2VError(f"these engines need TensorRT, which is not installed: {INSTALL_HINT}")


def process_logger(trt: Any) -> Any:
    """The one trt.ILogger of this process: polygraphy's when it made one first, else a WARNING trt.Logger."""
    if _PROCESS.get("logger") is None:
        made = getattr(sys.modules.get("polygraphy.backend.trt.util"), "TRT_LOGGER", None)
        _PROCESS["logger"] = made if made is not None and trt.__name__ == "tensorrt" else trt.Logger(trt.Logger.WARNING)
    return _PROCESS["logger"]


def current_logger() -> Any:
    """The process logger if a session made one, else None."""
    return _PROCESS.get("logger")


def check_version(trt: Any, variant: dict[str, Any], version_compatible: bool, file: str) -> None:
    """Refuse, in one line, an engine this TensorRT module cannot run (rules in the module docstring)."""
    built, installed, lean = variant.get("tensorrt_version"), trt.__version__, trt.__name__ == "tensorrt_lean"
    if lean and not version_compatible:
        raise T2VError(
            f"{file} is not version-compatible, so tensorrt_lean {installed} cannot run it: install "
            f"tensorrt {built or ''} (pip install -e '.[gpu]') or rebuild with `t2vtrt engines --version-compatible`"
        )
    if not built:
        return
    have, want = _version(installed)[:3], _version(built)[:3]
    if have == want or (version_compatible and not lean and have > want):
        return
    if version_compatible and not lean:
        need = f"TensorRT {built} or later"
    elif version_compatible:
        need = f"tensorrt_lean {built} (it runs only engines of its own version) or the full tensorrt {built} or later"
    else:
        need = f"TensorRT {built}"
    raise T2VError(
        f"{file} was built with TensorRT {built} but {trt.__name__} {installed} is installed: install {need} "
        f"or rebuild the engines here with `t2vtrt engines --gpu <profile>`"
    )


def _version(text: str) -> tuple[int, ...]:
    """'10.13.3.9' -> (10, 13, 3, 9); non-numeric parts are dropped."""
    return tuple(int(p) for p in text.split(".") if p.isdigit())


def check_device(capability: str, variant: dict[str, Any], hardware_compat: str | None, file: str) -> None:
    """The engine's GPU family must match this device: same capability, or any sm80+ for ampere_plus engines."""
    built = variant.get("compute_capability")
    if not built or built == capability:
        return
    if hardware_compat == "ampere_plus" and _version(capability) >= (8, 0):
        return
    raise T2VError(
        f"{file} was built for compute capability {built} but this GPU is {capability}: rebuild the engines "
        f"on this GPU with `t2vtrt engines --gpu auto`"
    )


class CudaRuntime:
    """The few CUDA runtime calls the backend needs, over cuda-python."""

    def __init__(self, cudart: Any, native_handle: Any = None) -> None:
        self.rt = cudart
        self.native_handle = native_handle or int  # int(cudaStream_t) is deprecated from cuda-bindings 12.9 / 13

    def _call(self, result: Any) -> Any:
        """Unpack (err, value...) and raise on error."""
        result = result if isinstance(result, tuple) else (result,)
        if result[0] != self.rt.cudaError_t.cudaSuccess:
            raise T2VError(f"CUDA call failed: {result[0]}; check the driver and that a GPU is visible (nvidia-smi)")
        return result[1] if len(result) > 1 else None

    def capability(self) -> str:
        """The current device's compute capability, '8.6'."""
        props = self._call(self.rt.cudaGetDeviceProperties(self._call(self.rt.cudaGetDevice())))
        return f"{props.major}.{props.minor}"

    def malloc(self, nbytes: int) -> int:
        """A device pointer."""
        return int(self._call(self.rt.cudaMalloc(max(nbytes, 1))))

    def free(self, ptr: int) -> None:
        """Release a device pointer."""
        self._call(self.rt.cudaFree(ptr))

    def create_stream(self) -> int:
        """A new stream's handle."""
        return int(self.native_handle(self._call(self.rt.cudaStreamCreate())))

    def destroy_stream(self, stream: int) -> None:
        """Release a stream."""
        self._call(self.rt.cudaStreamDestroy(stream))

    def to_device(self, ptr: int, array: np.ndarray, stream: int) -> None:
        """Async host -> device copy."""
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._call(self.rt.cudaMemcpyAsync(ptr, array.ctypes.data, array.nbytes, kind, stream))

    def to_host(self, array: np.ndarray, ptr: int, stream: int) -> None:
        """Async device -> host copy."""
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._call(self.rt.cudaMemcpyAsync(array.ctypes.data, ptr, array.nbytes, kind, stream))

    def synchronize(self, stream: int) -> None:
        """Wait for the stream."""
        self._call(self.rt.cudaStreamSynchronize(stream))


class PolygraphyCuda:
    """The same calls over polygraphy's ctypes wrapper of libcudart (when cuda-python is absent)."""

    def __init__(self) -> None:
        from polygraphy import cuda

        self.cuda = cuda
        self.w = cuda.wrapper()

    def capability(self) -> str:
        """cudaDeviceGetAttribute(ComputeCapabilityMajor = 75, Minor = 76) on the current device."""
        device, major, minor = ctypes.c_int(0), ctypes.c_int(0), ctypes.c_int(0)
        self.w.check(self.w.handle.cudaGetDevice(ctypes.byref(device)))
        self.w.check(self.w.handle.cudaDeviceGetAttribute(ctypes.byref(major), ctypes.c_int(75), device))
        self.w.check(self.w.handle.cudaDeviceGetAttribute(ctypes.byref(minor), ctypes.c_int(76), device))
        return f"{major.value}.{minor.value}"

    def malloc(self, nbytes: int) -> int:
        """A device pointer."""
        return int(self.w.malloc(max(nbytes, 1)))

    def free(self, ptr: int) -> None:
        """Release a device pointer."""
        self.w.free(ptr)

    def create_stream(self) -> int:
        """A new stream's handle."""
        return int(self.w.create_stream())

    def destroy_stream(self, stream: int) -> None:
        """Release a stream."""
        self.w.destroy_stream(stream)

    def to_device(self, ptr: int, array: np.ndarray, stream: int) -> None:
        """Async host -> device copy."""
        self.w.memcpy(ptr, array.ctypes.data, array.nbytes, self.cuda.MemcpyKind.HostToDevice, stream)

    def to_host(self, array: np.ndarray, ptr: int, stream: int) -> None:
        """Async device -> host copy."""
        self.w.memcpy(array.ctypes.data, ptr, array.nbytes, self.cuda.MemcpyKind.DeviceToHost, stream)

    def synchronize(self, stream: int) -> None:
        """Wait for the stream."""
        self.w.stream_synchronize(stream)


def cuda_api() -> CudaRuntime | PolygraphyCuda:
    """cuda-python (new then old module layout), else polygraphy's wrapper; a one-line error with neither."""
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # type: ignore[no-redef]  # older cuda-python (gone in 13)
        except ImportError:
            cudart = None
    if cudart is not None:
        return CudaRuntime(cudart, _native_handle())
    try:
        return PolygraphyCuda()
    except ImportError as exc:
        raise T2VError(f"the TensorRT backend needs CUDA bindings: {INSTALL_HINT}") from exc
    except Exception as exc:  # noqa: BLE001 - OSError from ctypes.CDLL, PolygraphyException from its logger
        raise T2VError(
            f"cuda-python is not installed and polygraphy's fallback could not load libcudart.so ({_first_line(exc)}): {INSTALL_HINT}"
        ) from exc


def _native_handle() -> Any:
    """cuda.bindings.utils.get_cuda_native_handle where it exists (cuda-bindings >= 12.9), else None (int)."""
    try:
        from cuda.bindings.utils import get_cuda_native_handle
    except ImportError:
        return None
    return get_cuda_native_handle


def _first_line(exc: BaseException) -> str:
    """An exception's first message line, or its type name."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def numpy_dtype(kind: str, what: str) -> np.dtype:
    """The numpy dtype for a trt.DataType name; BF16/FP8 through ml_dtypes (numpy has neither)."""
    if kind in DTYPES:
        return np.dtype(DTYPES[kind])
    if kind not in ML_DTYPES:
        raise T2VError(f"{what} has TensorRT type {kind}, which numpy cannot hold: export that tensor as FP32")
    try:
        import ml_dtypes
    except ImportError as exc:
        raise T2VError(f"{what} is {kind}, which numpy holds only through ml_dtypes: pip install ml_dtypes") from exc
    return np.dtype(getattr(ml_dtypes, ML_DTYPES[kind]))


class TrtSession:
    """One deserialized engine with its execution context, stream and device buffers."""

    def __init__(self, data: bytes, trt: Any, cuda: Any, file: str, host_code_allowed: bool = False) -> None:
        self.trt, self.cuda, self.file = trt, cuda, file
        self.runtime = trt.Runtime(process_logger(trt))  # the logger lives as long as the process
        if host_code_allowed:
            self.runtime.engine_host_code_allowed = True  # version-compatible plans carry host code
        self.engine = self.runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            raise T2VError(
                f"TensorRT {trt.__version__} could not deserialize {file}: it was built for another TensorRT version "
                "or GPU, or the file is damaged; rebuild with `t2vtrt engines --gpu auto`"
            )
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        self.stream = cuda.create_stream()
        self.buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes)

    def _dtype(self, name: str) -> np.dtype:
        """The numpy dtype of an engine tensor."""
        return numpy_dtype(self.engine.get_tensor_dtype(name).name, f"{self.file}: tensor {name!r}")

    def _buffer(self, name: str, nbytes: int) -> int:
        """A device buffer of at least nbytes for a tensor, grown when a larger shape arrives."""
        ptr, size = self.buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                self.cuda.free(ptr)
            ptr, size = self.cuda.malloc(nbytes), nbytes
            self.buffers[name] = (ptr, size)
        return ptr

    def _set_input(self, name: str, array: np.ndarray, staged: list[np.ndarray]) -> None:
        """Set the input's shape (inside the built profile) and copy it to the device."""
        host = np.ascontiguousarray(array, dtype=self._dtype(name))
        if not self.context.set_input_shape(name, tuple(host.shape)):
            lo, _, hi = self.engine.get_tensor_profile_shape(name, 0)
            raise T2VError(
                f"{self.file}: input {name!r} shape {tuple(host.shape)} is outside the built profile "
                f"[{tuple(lo)}, {tuple(hi)}]; pick a size inside it or rebuild the engines wider"
            )
        ptr = self._buffer(name, host.nbytes)
        self.cuda.to_device(ptr, host, self.stream)
        self.context.set_tensor_address(name, ptr)
        staged.append(host)  # kept alive until the stream is synchronised

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One inference: host feeds in, host outputs out."""
        staged: list[np.ndarray] = []
        for name in self.inputs:
            if name not in feeds:
                raise T2VError(f"{self.file}: input {name!r} is missing")
            self._set_input(name, feeds[name], staged)
        results = {}
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            results[name] = np.empty(shape, dtype=self._dtype(name))
            self.context.set_tensor_address(name, self._buffer(name, results[name].nbytes))
        if not self.context.execute_async_v3(self.stream):
            raise T2VError(f"{self.file}: TensorRT execution failed (see the TensorRT log above)")
        for name, array in results.items():
            self.cuda.to_host(array, self.buffers[name][0], self.stream)
        self.cuda.synchronize(self.stream)
        return results

    def close(self) -> None:
        """Free device buffers, the stream, the context and the engine (--low-vram relies on this)."""
        for ptr, _ in self.buffers.values():
            self.cuda.free(ptr)
        self.buffers.clear()
        if self.stream:
            self.cuda.destroy_stream(self.stream)
            self.stream = 0
        self.context = self.engine = self.runtime = None


def open_session(path: Path, component: dict[str, Any], variant: dict[str, Any], manifest: Manifest, **_: Any) -> TrtSession:
    """Check the engine against this machine (TensorRT version, GPU), then deserialize it."""
    target = manifest.data["target"]
    version_compatible = bool(target.get("version_compatible"))
    trt = import_tensorrt()
    check_version(trt, variant, version_compatible, str(path))
    cuda = cuda_api()
    check_device(cuda.capability(), variant, target.get("hardware_compatibility"), str(path))
    return TrtSession(Path(path).read_bytes(), trt, cuda, str(path), host_code_allowed=version_compatible)
