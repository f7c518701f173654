"""ONNX Runtime backend: the cpu target (and onnxruntime-gpu's CUDA provider when installed).

Also the one place that decides which device ONNX Runtime runs a graph on, for the runtime and for the build's
own sessions (calibration's ranges, sweep and gate): T2VTRT_ORT_DEVICE = auto (CUDA when onnxruntime-gpu can use
a GPU, else CPU; the default), cpu, or cuda (a GPU or a one-line error).
"""

from __future__ import annotations

import functools
import os
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from t2vtrt.runtime.errors import T2VError
from t2vtrt.runtime.manifest import Manifest


class OrtSession:
    """An InferenceSession returning outputs by name."""

    def __init__(self, path: Path, threads: int | None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise T2VError("onnxruntime is not installed: pip install 't2v-trt[cpu]' (or onnxruntime-gpu)") from exc
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        # Memory patterns pre-plan one block per run from the first run's allocations; the arena alone reuses
        # freed blocks instead. Measured on the bench model (make bench, idle): peak RSS 1458 -> 955 MB for
        # fp32, 1301 -> 800 MB for int8, same speed within run-to-run noise.
        options.enable_mem_pattern = False
        if threads:
            options.intra_op_num_threads = threads
        self.session = new_session(str(path), options)
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One inference."""
        return dict(zip(self.output_names, self.session.run(self.output_names, feeds)))

    def close(self) -> None:
        """Drop the session (ORT frees on garbage collection)."""
        self.session = None


DEVICE_ENV = "T2VTRT_ORT_DEVICE"
DEVICES = ("auto", "cpu", "cuda")
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
# The GPU build environment: onnxruntime-gpu without the CPU package (both install into one `onnxruntime` folder).
GPU_INSTALL = "pip uninstall -y onnxruntime onnxruntime-gpu, then pip install -c constraints.txt -e '.[build-tools,gpu]'"
# This process's sessions: the devices they ran on (what a derived artifact records), and whether CUDA failed to
# start once under auto (the sessions after it go straight to the CPU: one warning per process, not per session).
_DEVICES_USED: set[str] = set()
_CUDA_FAILED: list[str] = []


def ort_device() -> str:
    """The device choice of this process: T2VTRT_ORT_DEVICE (auto, cpu or cuda), auto when unset."""
    value = os.environ.get(DEVICE_ENV, "").strip().lower() or "auto"
    if value not in DEVICES:
        raise T2VError(f"{DEVICE_ENV}={value!r} is not a device ONNX Runtime can run on: set it to auto, cpu or cuda (or unset it)")
    return value


def check_one_package(installed: frozenset[str]) -> None:
    """Refuse an environment holding both onnxruntime and onnxruntime-gpu: whichever installed last overwrote the other's files."""
    if {"onnxruntime", "onnxruntime-gpu"} <= installed:
        raise T2VError(
            "onnxruntime and onnxruntime-gpu are both installed and share one package folder: keep one. "
            f"GPU machine: {GPU_INSTALL}; CPU: pip uninstall -y onnxruntime onnxruntime-gpu, then pip install -e '.[build]'"
        )


def providers(available: list[str], device: str) -> list[Any]:
    """The execution providers for a device choice, CUDA first when chosen and offered; CPU always last.

    use_tf32 0: FP32 graphs compute in FP32 on CUDA as on the CPU (calibration's captures, ranges and references
    are FP32 figures; ONNX Runtime would otherwise round matrix products' inputs to TF32 on Ampere and later).
    kSameAsRequested: the CUDA arena grows by what a run asks for instead of doubling, so a real-size FP32 graph
    holds about what it uses on cards with little memory to spare.
    """
    if device == "cuda" and CUDA not in available:
        raise T2VError(f"{DEVICE_ENV}=cuda, but the installed onnxruntime has no CUDA provider: {GPU_INSTALL} (or set {DEVICE_ENV}=cpu)")
    if device == "cpu" or CUDA not in available:
        return [CPU]
    return [(CUDA, {"use_tf32": "0", "arena_extend_strategy": "kSameAsRequested"}), CPU]


@functools.cache
def installed_ort_packages() -> frozenset[str]:
    """The installed distributions named onnxruntime* (normalised names)."""
    names = ((d.metadata["Name"] or "").lower().replace("_", "-") for d in metadata.distributions())
    return frozenset(n for n in names if n.startswith("onnxruntime"))


@functools.cache
def _load_cuda_libraries() -> None:
    """Load the CUDA and cuDNN libraries of the nvidia-* wheels onnxruntime-gpu's [cuda,cudnn] extras install (once)."""
    import onnxruntime as ort

    if hasattr(ort, "preload_dlls"):  # onnxruntime-gpu 1.21+; before that the libraries come from the system paths
        ort.preload_dlls()


def new_session(source: str | bytes, options: Any, device: str | None = None) -> Any:
    """An InferenceSession on the chosen device (default: ort_device()); a one-line error or warning when CUDA does not load."""
    import onnxruntime as ort

    device = device or ort_device()
    check_one_package(installed_ort_packages())
    chosen = providers(ort.get_available_providers(), "cpu" if device == "auto" and _CUDA_FAILED else device)
    if len(chosen) > 1:
        _load_cuda_libraries()
    session = ort.InferenceSession(source, sess_options=options, providers=chosen)
    if len(chosen) > 1 and CUDA not in session.get_providers():
        why = "no GPU visible, or its CUDA/cuDNN libraries did not load (onnxruntime's log says which)"
        if device == "cuda":
            raise T2VError(f"{DEVICE_ENV}=cuda, but ONNX Runtime's CUDA provider did not start: {why}")
        print(f"warning: ONNX Runtime's CUDA provider did not start ({why}): running on the CPU ({DEVICE_ENV}=cpu says so up front)", file=sys.stderr)
        _CUDA_FAILED.append(why)
    _DEVICES_USED.add("cuda" if CUDA in session.get_providers() else "cpu")
    return session


def devices_used() -> list[str]:
    """The devices this process's sessions ran on so far ('cpu', 'cuda'), for the records of what they made."""
    return sorted(_DEVICES_USED)


def open_session(
    path: Path, component: dict[str, Any], variant: dict[str, Any], manifest: Manifest, threads: int | None = None, **_: Any
) -> OrtSession:
    """Open one ONNX variant."""
    return OrtSession(path, threads)
