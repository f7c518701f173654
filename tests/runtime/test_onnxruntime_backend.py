"""The ONNX Runtime backend's device choice: T2VTRT_ORT_DEVICE, the provider list, one ORT package, sessions on a real graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from t2vtrt.runtime.backends import onnxruntime as backend
from t2vtrt.runtime.errors import T2VError


@pytest.fixture(autouse=True)
def fresh_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts as a new process would: no device chosen, no session run yet."""
    monkeypatch.delenv(backend.DEVICE_ENV, raising=False)
    monkeypatch.setattr(backend, "_DEVICES_USED", set())
    monkeypatch.setattr(backend, "_CUDA_FAILED", [])


def matmul_graph(path: Path) -> Path:
    """y = x @ w, 64x64 FP32: a product TF32 would round."""
    w = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "mm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 64])],
        [onnx.numpy_helper.from_array(w, "w")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.mark.parametrize(("value", "device"), [(None, "auto"), ("", "auto"), ("cpu", "cpu"), (" CUDA ", "cuda"), ("auto", "auto")])
def test_device_choice_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch, value: str | None, device: str) -> None:
    """T2VTRT_ORT_DEVICE picks auto, cpu or cuda; unset or empty is auto."""
    if value is not None:
        monkeypatch.setenv(backend.DEVICE_ENV, value)
    assert backend.ort_device() == device


def test_an_unknown_device_is_a_one_line_error_naming_the_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    """A typo is refused, not read as auto."""
    monkeypatch.setenv(backend.DEVICE_ENV, "gpu")
    with pytest.raises(T2VError, match=r"T2VTRT_ORT_DEVICE='gpu' is not a device .*: set it to auto, cpu or cuda"):
        backend.ort_device()


def test_providers_put_exact_fp32_cuda_first_only_when_chosen_and_offered() -> None:
    """auto and cuda take CUDA (no TF32, arena grown as asked) before the CPU; cpu, or no CUDA provider, is the CPU alone."""
    both = [backend.CUDA, backend.CPU]
    cuda_first = [(backend.CUDA, {"use_tf32": "0", "arena_extend_strategy": "kSameAsRequested"}), backend.CPU]
    assert backend.providers(both, "auto") == cuda_first
    assert backend.providers(both, "cuda") == cuda_first
    assert backend.providers(both, "cpu") == [backend.CPU]
    assert backend.providers([backend.CPU], "auto") == [backend.CPU]
    with pytest.raises(T2VError, match=r"installed onnxruntime has no CUDA provider: .*'\.\[build-tools,gpu\]'"):
        backend.providers([backend.CPU], "cuda")


def test_both_onnxruntime_packages_are_refused_with_the_fix() -> None:
    """onnxruntime and onnxruntime-gpu together: one line saying which to keep; either alone passes."""
    backend.check_one_package(frozenset({"onnxruntime"}))
    backend.check_one_package(frozenset({"onnxruntime-gpu"}))
    with pytest.raises(T2VError, match=r"both installed .*pip uninstall -y onnxruntime onnxruntime-gpu"):
        backend.check_one_package(frozenset({"onnxruntime", "onnxruntime-gpu"}))


def test_this_environment_holds_one_onnxruntime_package() -> None:
    """The test venv is a real install: its ONNX Runtime distributions pass the check."""
    installed = backend.installed_ort_packages()
    assert installed & {"onnxruntime", "onnxruntime-gpu"}
    backend.check_one_package(installed)


def test_sessions_run_on_the_cpu_and_record_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """cpu, and auto where the package has no CUDA provider, run the graph on the CPU; devices_used says so."""
    if backend.CUDA in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed: auto would take CUDA (test_cuda_session_matches_the_cpu covers it)")
    path = matmul_graph(tmp_path / "mm.onnx")
    x = np.ones((2, 64), np.float32)
    for device in ("cpu", "auto"):
        monkeypatch.setenv(backend.DEVICE_ENV, device)
        session = backend.new_session(str(path), ort.SessionOptions())
        assert session.get_providers() == [backend.CPU]
        assert session.run(None, {"x": x})[0].shape == (2, 64)
    assert backend.devices_used() == ["cpu"]


def test_cuda_without_onnxruntime_gpu_is_a_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """T2VTRT_ORT_DEVICE=cuda with the CPU package: refused before any session, naming the GPU install."""
    if backend.CUDA in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed here")
    monkeypatch.setenv(backend.DEVICE_ENV, "cuda")
    with pytest.raises(T2VError, match=r"T2VTRT_ORT_DEVICE=cuda, but the installed onnxruntime has no CUDA provider"):
        backend.new_session(str(matmul_graph(tmp_path / "mm.onnx")), ort.SessionOptions())
    assert backend.devices_used() == []


@pytest.mark.gpu
def test_cuda_session_matches_the_cpu(tmp_path: Path) -> None:
    """On a GPU with the gpu extra (onnxruntime-gpu): a cuda session runs on CUDA and its FP32 product is the CPU's (no TF32)."""
    path = str(matmul_graph(tmp_path / "mm.onnx"))
    x = np.random.default_rng(1).standard_normal((8, 64)).astype(np.float32)
    cuda = backend.new_session(path, ort.SessionOptions(), device="cuda")
    assert cuda.get_providers()[0] == backend.CUDA
    cpu = backend.new_session(path, ort.SessionOptions(), device="cpu")
    got, want = cuda.run(None, {"x": x})[0], cpu.run(None, {"x": x})[0]
    # TF32 keeps 10 mantissa bits: its error on a 64-term product of unit normals is ~1e-3 relative; FP32's ~1e-6.
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-5
    assert backend.devices_used() == ["cpu", "cuda"]
