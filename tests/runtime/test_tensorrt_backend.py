"""The TensorRT runtime backend: version/device checks and the run plumbing on CPU (fakes); real engines on a GPU."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from t2vtrt.runtime.backends import tensorrt as backend
from t2vtrt.runtime.errors import T2VError


def test_backend_module_imports_without_tensorrt_or_cuda() -> None:
    """Importing the backend pulls neither tensorrt, cuda nor polygraphy (they load when a session opens)."""
    code = (
        "import sys; import t2vtrt.runtime.backends.tensorrt; "
        "print(sorted(m for m in ('tensorrt', 'tensorrt_lean', 'cuda', 'polygraphy') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.fixture(autouse=True)
def fresh_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts as a new process would: no process logger yet."""
    monkeypatch.setattr(backend, "_PROCESS", {})


def test_missing_tensorrt_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither tensorrt nor tensorrt_lean: the install command with each extra's driver."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setitem(sys.modules, "tensorrt_lean", None)
    with pytest.raises(T2VError, match=r"need TensorRT, which is not installed: pip install -e '\.\[gpu\]' \(CUDA 12, driver r535\+\)"):
        backend.import_tensorrt()


def test_one_tensorrt_module_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Full tensorrt first; whichever module is loaded already is kept, so the other is never imported beside it."""
    lean, full = types.ModuleType("tensorrt_lean"), types.ModuleType("tensorrt")
    monkeypatch.setitem(sys.modules, "tensorrt_lean", lean)
    monkeypatch.setitem(sys.modules, "tensorrt", full)
    assert backend.import_tensorrt() is full
    monkeypatch.delitem(sys.modules, "tensorrt")
    imported = []
    monkeypatch.setattr(backend.importlib, "import_module", lambda name: imported.append(name) or full)
    assert backend.import_tensorrt() is lean and imported == []  # tensorrt_lean is loaded: tensorrt is not tried
    monkeypatch.delitem(sys.modules, "tensorrt_lean")
    assert backend.import_tensorrt() is full and imported == ["tensorrt"]


def _module(name: str, version: str) -> types.SimpleNamespace:
    """A TensorRT module as check_version sees it: its import name and version."""
    return types.SimpleNamespace(__name__=name, __version__=version)


@pytest.mark.parametrize(
    ("module", "installed", "built", "compatible", "ok"),
    [
        ("tensorrt", "10.13.3.9", "10.13.3.9", False, True),
        ("tensorrt", "10.13.3.1", "10.13.3.9", False, True),  # build number only
        ("tensorrt", "10.14.1.48", "10.13.3.9", False, False),
        ("tensorrt", "10.14.1.48", "10.13.3.9", True, True),  # embedded lean runtime: a later TensorRT loads it
        ("tensorrt", "11.1.0.106", "10.13.3.9", True, True),  # ... across a major too (TensorRT's guide: 10 -> 11)
        ("tensorrt", "10.12.0.36", "10.13.3.9", True, False),  # never an older runtime
        ("tensorrt_lean", "10.13.3.9", "10.13.3.9", True, True),  # the lean runtime of the build's version
        ("tensorrt_lean", "10.14.1.48", "10.13.3.9", True, False),  # a lean runtime runs only its own version
    ],
)
def test_engine_tensorrt_version_check(module: str, installed: str, built: str, compatible: bool, ok: bool) -> None:
    """The engine's TensorRT version against the loaded module, per the manifest's version_compatible."""
    variant = {"tensorrt_version": built}
    if ok:
        backend.check_version(_module(module, installed), variant, compatible, "denoiser.plan")
    else:
        with pytest.raises(T2VError, match=rf"denoiser\.plan was built with TensorRT {built} but {module} {installed} is installed"):
            backend.check_version(_module(module, installed), variant, compatible, "denoiser.plan")


def test_lean_runtime_refuses_a_plain_engine_in_one_line() -> None:
    """tensorrt_lean cannot deserialize an engine that is not version-compatible: refused before TensorRT tries."""
    with pytest.raises(
        T2VError,
        match=r"^e\.plan is not version-compatible, so tensorrt_lean 10\.13\.3\.9 cannot run it: "
        r"install tensorrt 10\.13\.3\.9 .*--version-compatible`$",
    ):
        backend.check_version(_module("tensorrt_lean", "10.13.3.9"), {"tensorrt_version": "10.13.3.9"}, False, "e.plan")


def test_engine_device_check() -> None:
    """Same capability runs; another refuses, unless the engine is ampere_plus and this GPU is sm80+."""
    backend.check_device("8.6", {"compute_capability": "8.6"}, None, "e.plan")
    backend.check_device("8.9", {"compute_capability": "8.6"}, "ampere_plus", "e.plan")
    with pytest.raises(T2VError, match=r"e\.plan was built for compute capability 8\.6 but this GPU is 8\.9: rebuild"):
        backend.check_device("8.9", {"compute_capability": "8.6"}, "none", "e.plan")
    with pytest.raises(T2VError, match="this GPU is 7.5"):
        backend.check_device("7.5", {"compute_capability": "8.6"}, "ampere_plus", "e.plan")


# --------------------------------------------------------------------------- run plumbing with fakes


class FakeCuda:
    """Device memory as numpy byte arrays keyed by fake pointers."""

    def __init__(self) -> None:
        self.memory: dict[int, np.ndarray] = {}
        self.next_ptr, self.streams = 0x1000, 0

    def capability(self) -> str:
        return "8.6"

    def malloc(self, nbytes: int) -> int:
        self.next_ptr += 0x1000 + nbytes
        self.memory[self.next_ptr] = np.zeros(max(nbytes, 1), np.uint8)
        return self.next_ptr

    def free(self, ptr: int) -> None:
        del self.memory[ptr]

    def create_stream(self) -> int:
        self.streams += 1
        return 7

    def destroy_stream(self, stream: int) -> None:
        self.streams -= 1

    def to_device(self, ptr: int, array: np.ndarray, stream: int) -> None:
        self.memory[ptr][: array.nbytes] = np.frombuffer(array.tobytes(), np.uint8)

    def to_host(self, array: np.ndarray, ptr: int, stream: int) -> None:
        array.view(np.uint8).reshape(-1)[:] = self.memory[ptr][: array.nbytes]

    def synchronize(self, stream: int) -> None:
        pass


def fake_trt(cuda: FakeCuda, deserializes: bool = True) -> types.SimpleNamespace:
    """An engine computing y = 2x over x of shape (batch in [1, 4], 3), with TensorRT's Python API shape."""
    io_mode = types.SimpleNamespace(INPUT="in", OUTPUT="out")

    class Context:
        def __init__(self) -> None:
            self.shapes: dict[str, tuple[int, ...]] = {}
            self.addresses: dict[str, int] = {}

        def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
            if not (1 <= shape[0] <= 4 and shape[1:] == (3,)):
                return False
            self.shapes[name] = self.shapes["y"] = shape
            return True

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            return self.shapes[name]

        def set_tensor_address(self, name: str, ptr: int) -> None:
            self.addresses[name] = ptr

        def execute_async_v3(self, stream: int) -> bool:
            n = int(np.prod(self.shapes["x"]))
            x = cuda.memory[self.addresses["x"]][: 4 * n].view(np.float32)
            cuda.memory[self.addresses["y"]][: 4 * n] = (2 * x).view(np.uint8)
            return True

    class Engine:
        num_io_tensors = 2

        def get_tensor_name(self, i: int) -> str:
            return ["x", "y"][i]

        def get_tensor_mode(self, name: str) -> str:
            return io_mode.INPUT if name == "x" else io_mode.OUTPUT

        def get_tensor_dtype(self, name: str) -> types.SimpleNamespace:
            return types.SimpleNamespace(name="FLOAT")

        def get_tensor_profile_shape(self, name: str, profile: int) -> list[tuple[int, ...]]:
            return [(1, 3), (2, 3), (4, 3)]

        def create_execution_context(self) -> Context:
            return Context()

    class Logger:
        WARNING = 2
        made = 0

        def __init__(self, min_severity: int) -> None:
            self.min_severity = min_severity
            Logger.made += 1

    class Runtime:
        def __init__(self, logger: Logger) -> None:
            self.logger, self.engine_host_code_allowed = logger, False

        def deserialize_cuda_engine(self, data: bytes) -> Engine | None:
            return Engine() if deserializes else None

    return types.SimpleNamespace(__name__="tensorrt", __version__="10.13.3.9", Logger=Logger, Runtime=Runtime, TensorIOMode=io_mode)


def test_session_runs_grows_buffers_and_frees_everything() -> None:
    """Shapes set per call, buffers grown for a larger batch, outputs copied back; close frees all."""
    cuda = FakeCuda()
    session = backend.TrtSession(b"plan", fake_trt(cuda), cuda, "e.plan")
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(session.run({"x": x})["y"], 2 * x)
    big = np.ones((4, 3), np.float64)  # cast to the engine's float32
    out = session.run({"x": big})["y"]
    assert out.dtype == np.float32 and out.shape == (4, 3) and (out == 2).all()
    assert len(cuda.memory) == 2 and all(buf.size >= 48 for buf in cuda.memory.values())
    session.close()
    assert cuda.memory == {} and cuda.streams == 0


def test_session_refuses_shapes_outside_the_profile() -> None:
    """A batch the engine was not built for: one line with the profile."""
    cuda = FakeCuda()
    session = backend.TrtSession(b"plan", fake_trt(cuda), cuda, "e.plan")
    with pytest.raises(T2VError, match=r"input 'x' shape \(5, 3\) is outside the built profile \[\(1, 3\), \(4, 3\)\]"):
        session.run({"x": np.zeros((5, 3), np.float32)})
    with pytest.raises(T2VError, match="input 'x' is missing"):
        session.run({})


def test_engine_that_does_not_deserialize_is_one_line() -> None:
    """deserialize_cuda_engine returning None: say why and how to fix."""
    cuda = FakeCuda()
    with pytest.raises(T2VError, match=r"could not deserialize e\.plan: it was built for another TensorRT version or GPU"):
        backend.TrtSession(b"plan", fake_trt(cuda, deserializes=False), cuda, "e.plan")


def test_one_logger_for_every_session(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sessions share one trt.Logger made once; when polygraphy made its logger first, that one is used."""
    cuda = FakeCuda()
    trt = fake_trt(cuda)
    first, second = (backend.TrtSession(b"plan", trt, cuda, f"{i}.plan") for i in range(2))
    assert trt.Logger.made == 1 and first.runtime.logger is second.runtime.logger
    assert first.runtime.logger.min_severity == trt.Logger.WARNING
    monkeypatch.setattr(backend, "_PROCESS", {})
    polygraphy_logger = object()
    monkeypatch.setitem(sys.modules, "polygraphy.backend.trt.util", types.SimpleNamespace(TRT_LOGGER=polygraphy_logger))
    assert backend.TrtSession(b"plan", trt, cuda, "e.plan").runtime.logger is polygraphy_logger
    assert trt.Logger.made == 1


def test_version_compatible_engines_may_run_their_embedded_runtime(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A version-compatible manifest opens with engine_host_code_allowed (its plans carry their lean runtime); others without."""
    cuda = FakeCuda()
    trt = fake_trt(cuda)
    trt.__version__ = "10.14.1.48"  # later than the build: allowed only because the engine is version-compatible
    monkeypatch.setattr(backend, "import_tensorrt", lambda: trt)
    monkeypatch.setattr(backend, "cuda_api", lambda: cuda)
    (tmp_path / "e.plan").write_bytes(b"plan")
    variant = {"tensorrt_version": "10.13.3.9", "compute_capability": "8.6"}
    target = {"version_compatible": True, "hardware_compatibility": "none"}
    session = backend.open_session(tmp_path / "e.plan", {}, variant, types.SimpleNamespace(data={"target": target}))
    assert session.runtime.engine_host_code_allowed is True
    session.close()
    trt.__version__ = "10.13.3.9"
    target["version_compatible"] = False
    session = backend.open_session(tmp_path / "e.plan", {}, variant, types.SimpleNamespace(data={"target": target}))
    assert session.runtime.engine_host_code_allowed is False


def test_polygraphy_fallback_without_libcudart_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """No cuda-python and polygraphy's ctypes.CDLL('libcudart.so') raising OSError: one T2VError, not a traceback."""
    for name in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart"):
        monkeypatch.setitem(sys.modules, name, None)

    def no_libcudart() -> None:
        raise OSError("libcudart.so: cannot open shared object file: No such file or directory")

    monkeypatch.setattr(backend.PolygraphyCuda, "__init__", lambda self: no_libcudart())
    with pytest.raises(
        T2VError,
        match=r"polygraphy's fallback could not load libcudart\.so \(libcudart\.so: cannot open .*\): "
        r"pip install -e '\.\[gpu\]'",
    ):
        backend.cuda_api()


class FakeStream:
    """cuda-bindings' cudaStream_t: int() works but is deprecated; get_cuda_native_handle is the way."""

    def __int__(self) -> int:
        raise AssertionError("int(cudaStream_t) is deprecated in cuda-bindings 13")


def test_stream_handle_goes_through_get_cuda_native_handle() -> None:
    """cudaStreamCreate's (err, cudaStream_t) becomes the int TensorRT's execute_async_v3 takes, without int(stream)."""
    success = 0
    rt = types.SimpleNamespace(cudaError_t=types.SimpleNamespace(cudaSuccess=success), cudaStreamCreate=lambda: (success, FakeStream()))
    handles = {}
    cuda = backend.CudaRuntime(rt, lambda obj: handles.setdefault("stream", 0x7F00))
    assert cuda.create_stream() == 0x7F00 and isinstance(handles["stream"], int)


def test_engine_dtypes_include_bf16_and_fp8(monkeypatch: pytest.MonkeyPatch) -> None:
    """BF16 and FP8 tensors map through ml_dtypes; without it, or for a type numpy cannot hold, one line."""
    ml_dtypes = pytest.importorskip("ml_dtypes", reason="ml_dtypes is in the build and gpu extras")
    assert backend.numpy_dtype("BF16", "t") == np.dtype(ml_dtypes.bfloat16)
    assert backend.numpy_dtype("FP8", "t") == np.dtype(ml_dtypes.float8_e4m3fn)
    assert backend.numpy_dtype("HALF", "t") == np.float16
    with pytest.raises(T2VError, match="e.plan: tensor 'x' has TensorRT type INT4, which numpy cannot hold"):
        backend.numpy_dtype("INT4", "e.plan: tensor 'x'")
    monkeypatch.setitem(sys.modules, "ml_dtypes", None)
    with pytest.raises(T2VError, match="is BF16, which numpy holds only through ml_dtypes: pip install ml_dtypes"):
        backend.numpy_dtype("BF16", "e.plan: tensor 'x'")


def test_open_session_checks_before_deserializing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A manifest engine from another TensorRT version is refused before any engine bytes are read."""
    cuda = FakeCuda()
    trt = fake_trt(cuda)
    trt.__version__ = "10.14.1.48"
    monkeypatch.setattr(backend, "import_tensorrt", lambda: trt)
    monkeypatch.setattr(backend, "cuda_api", lambda: cuda)
    manifest = types.SimpleNamespace(data={"target": {"version_compatible": False, "hardware_compatibility": "none"}})
    variant = {"tensorrt_version": "10.13.3.9", "compute_capability": "8.6"}
    with pytest.raises(T2VError, match="built with TensorRT 10.13.3.9 but tensorrt 10.14.1.48 is installed"):
        backend.open_session(tmp_path / "missing.plan", {}, variant, manifest)
    trt.__version__ = "10.13.3.9"
    (tmp_path / "e.plan").write_bytes(b"plan")
    session = backend.open_session(tmp_path / "e.plan", {}, variant, manifest)
    assert session.run({"x": np.ones((1, 3), np.float32)})["y"].tolist() == [[2.0, 2.0, 2.0]]
    session.close()


# --------------------------------------------------------------------------- GPU only


@pytest.mark.gpu
def test_pipeline_on_tensorrt_engines_matches_cpu_target(tiny_paths: object, tiny_engines: Path, tmp_path: Path) -> None:
    """The same prompt and seed through TensorRT engines and the cpu target: close frames; --low-vram identical."""
    import shutil

    from t2vtrt.build.artifacts import ArtifactPaths
    from t2vtrt.build.engines.tensorrt import build_gpu_target
    from t2vtrt.build.gpus.detect import auto_profile
    from t2vtrt.runtime.pipeline import Pipeline

    paths = ArtifactPaths(tmp_path / "tiny")
    shutil.copytree(tiny_paths.onnx_dir, paths.onnx_dir)
    gpu_dir = build_gpu_target(paths, auto_profile(), quiet=True).parent
    args = dict(prompt="a red balloon rising over a lake", steps=4, seed=3)
    cpu = Pipeline.from_dir(tiny_engines, precision="fp32")(**args)
    resident = Pipeline.from_dir(gpu_dir, precision="fp32")(**args)
    low = Pipeline.from_dir(gpu_dir, precision="fp32", low_vram=True)(**args)
    assert resident.shape == cpu.shape
    assert np.abs(resident.astype(int) - cpu.astype(int)).max() <= 8
    np.testing.assert_array_equal(resident, low)
