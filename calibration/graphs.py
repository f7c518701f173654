"""Load, save and run ONNX graphs (external data past protobuf's 2 GB limit; saves are atomic)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from t2vtrt.runtime.errors import T2VError

EXTERNAL_DATA_BYTES = 1_800_000_000
Feeds = dict[str, np.ndarray]


def load_model(path: Path) -> Any:
    """An ONNX model with its weights; a one-line error when the file is missing or unreadable."""
    import onnx

    if not Path(path).is_file():
        raise T2VError(f"{path} is missing: run the earlier stages (`make engines`) first")
    try:
        return onnx.load(str(path))
    except Exception as exc:  # protobuf DecodeError, a missing external-data file, ...
        raise T2VError(f"{path} is not a readable ONNX model: {exc}") from exc


def _weight_bytes(model: Any) -> int:
    """Bytes of initializer data held in the model."""
    return sum(len(t.raw_data) or t.ByteSize() for t in model.graph.initializer)


def needs_external_data(path: Path) -> bool:
    """True when a saved graph's weights (with any <name>.data beside it) are past protobuf's limit."""
    path = Path(path)
    data = path.with_name(f"{path.name}.data")
    return path.stat().st_size + (data.stat().st_size if data.is_file() else 0) > EXTERNAL_DATA_BYTES


def save_model(model: Any, path: Path) -> Path:
    """Write `model` to `path` atomically: one file, or path + <name>.data past 2 GB (data lands first)."""
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{path.name}.", dir=path.parent) as tmp:
        tmp_model = Path(tmp) / path.name
        if _weight_bytes(model) > EXTERNAL_DATA_BYTES:
            data_name = f"{path.name}.data"
            onnx.save(model, str(tmp_model), save_as_external_data=True, all_tensors_to_one_file=True,
                      location=data_name, size_threshold=1024)
            os.replace(Path(tmp) / data_name, path.parent / data_name)
        else:
            onnx.save(model, str(tmp_model))
        os.chmod(tmp_model, 0o644)
        os.replace(tmp_model, path)
    return path


def session(model: Any, threads: int | None = None) -> Any:
    """An onnxruntime CPU session over a path or an in-memory model."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    if isinstance(model, (str, Path)):
        return ort.InferenceSession(str(model), sess_options=options, providers=["CPUExecutionProvider"])
    if _weight_bytes(model) <= EXTERNAL_DATA_BYTES:
        return ort.InferenceSession(model.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"])
    with tempfile.TemporaryDirectory(prefix="t2vtrt-session.") as tmp:
        return ort.InferenceSession(str(save_model(model, Path(tmp) / "model.onnx")), sess_options=options,
                                    providers=["CPUExecutionProvider"])


def batches(feeds: list[Feeds], size: int) -> list[Feeds]:
    """Consecutive feeds concatenated along the batch axis, `size` at a time (fewer, larger runs)."""
    size = max(1, size)
    return [{k: np.concatenate([f[k] for f in feeds[i:i + size]]) for k in feeds[0]} for i in range(0, len(feeds), size)]


def run_first_output(sess: Any, feeds: list[Feeds], batch: int = 8) -> np.ndarray:
    """The first output over all feeds, concatenated along the batch axis."""
    name = sess.get_outputs()[0].name
    return np.concatenate([sess.run([name], b)[0] for b in batches(feeds, batch)])
