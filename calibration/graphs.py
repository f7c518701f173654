"""Run ONNX graphs on ONNX Runtime (the device T2VTRT_ORT_DEVICE picks); load and save them through build/graphfiles.py (weights stay on disk)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from t2vtrt.runtime.backends import Feeds
from t2vtrt.runtime.backends.onnxruntime import new_session


def session(model: Any, threads: int | None = None, node_order: bool = False, arena: bool = True) -> Any:
    """An onnxruntime session over a path or an in-memory model, exact FP32 on CUDA or the CPU; node_order: run ready nodes in graph order.

    arena=False: every host buffer goes back to the system once freed, instead of into ONNX Runtime's CPU pool, which
    keeps the largest set a run ever held (slower runs, a lower peak where runs hold many weight-sized tensors).
    """
    import onnxruntime as ort

    from t2vtrt.build.graphfiles import EXTERNAL_DATA_BYTES, all_tensors, graph_beside, is_external, save_graph, weight_bytes
    from t2vtrt.build.heap import release_freed_memory

    release_freed_memory()  # freed heap of the sessions before it goes back before this one loads the weights

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    if node_order:  # priority-based: among ready nodes the earliest in the graph runs first
        options.execution_order = ort.ExecutionOrder.PRIORITY_BASED
    options.enable_cpu_mem_arena = arena
    if isinstance(model, (str, Path)):
        return new_session(str(model), options)
    if weight_bytes(model) < EXTERNAL_DATA_BYTES and not any(is_external(t) for t in all_tensors(model)):
        return new_session(model.SerializeToString(), options)
    folder = _weights_folder(model)
    if folder is not None and model.ByteSize() < EXTERNAL_DATA_BYTES:
        # Only the graph is written, beside its weights: a copy of them (gigabytes at real size, into TMPDIR, which
        # may be a RAM-backed tmpfs) would cost disk and time on every session.
        with graph_beside(_copy(model), folder, "session") as path:
            return new_session(str(path), options)
    # Weights in several folders, or in memory past protobuf's limit: a copy of all of them, saved beside one data file.
    with tempfile.TemporaryDirectory(prefix="t2vtrt-session.") as tmp:
        saved = save_graph(_copy(model), Path(tmp) / "model.onnx", external=True)
        return new_session(str(saved), options)


def _weights_folder(model: Any) -> Path | None:
    """The one folder that holds every external weight file of a loaded model (None: no external data, or several folders)."""
    from t2vtrt.build.graphfiles import all_tensors, external_ref, is_external

    files = {external_ref(t)[0] for t in all_tensors(model) if is_external(t)}
    folders = {file.resolve().parent for file in files}
    return folders.pop() if len(folders) == 1 else None


def _copy(model: Any) -> Any:
    """A copy of the model proto (saving re-points its tensors; the caller's model stays as it was)."""
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def batches(feeds: list[Feeds], size: int) -> list[Feeds]:
    """Consecutive feeds concatenated along the batch axis, `size` at a time (fewer, larger runs)."""
    size = max(1, size)
    return [{k: np.concatenate([f[k] for f in feeds[i : i + size]]) for k in feeds[0]} for i in range(0, len(feeds), size)]


def run_first_output(sess: Any, feeds: list[Feeds], batch: int = 8) -> np.ndarray:
    """The first output over all feeds, concatenated along the batch axis."""
    name = sess.get_outputs()[0].name
    return np.concatenate([sess.run([name], b)[0] for b in batches(feeds, batch)])
