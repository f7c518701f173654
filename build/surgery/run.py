"""Load a model, run surgery passes, check and save it atomically, and report what changed."""

from __future__ import annotations

import collections
import os
import time
from pathlib import Path

import onnx
import onnx_graphsurgeon as gs

from t2vtrt.runtime.errors import T2VError
from t2vtrt.runtime.files import atomic_path, temp_dir

from .registry import DEFAULT_PIPELINE, get_pass

# Protobuf cannot serialize a message over 2 GiB; past this many bytes of weights, save them beside the
# model as external data (and check the model by path, which is how the checker handles those).
EXTERNAL_DATA_BYTES = 1_800_000_000


def _load(path: Path) -> gs.Graph:
    """Import the model at `path` (external data next to it is loaded too)."""
    if not path.is_file():
        raise T2VError(f"surgery input not found: {path} (run the export stage first)")
    try:
        return gs.import_onnx(onnx.load(str(path)))
    except Exception as err:  # protobuf DecodeError, a missing external-data file, ...
        raise T2VError(f"surgery input {path} is not a readable ONNX model: {err}") from err


def _weight_bytes(model: onnx.ModelProto) -> int:
    """Bytes of initializer data held in the model."""
    return sum(len(t.raw_data) or t.ByteSize() for t in model.graph.initializer)


def _save_small(model: onnx.ModelProto, out: Path) -> None:
    """Check the model in memory and write it in one file, atomically."""
    onnx.checker.check_model(model)
    with atomic_path(out) as tmp:
        onnx.save(model, str(tmp))


def _save_external(model: onnx.ModelProto, out: Path) -> None:
    """Write model + `<name>.data` in a temp folder, check by path, then move the data and the model in."""
    data_name = f"{out.name}.data"
    out.parent.mkdir(parents=True, exist_ok=True)
    with temp_dir(out) as tmp:
        tmp_model = Path(tmp) / out.name
        onnx.save(model, str(tmp_model), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=data_name, size_threshold=1024)
        onnx.checker.check_model(str(tmp_model))
        # Data first: the model file is what make and the manifest look at, so it lands last.
        os.replace(Path(tmp) / data_name, out.parent / data_name)
        os.replace(tmp_model, out)


def _op_counts(graph: gs.Graph) -> dict[str, int]:
    """Node count per op type, most frequent first."""
    return dict(collections.Counter(node.op for node in graph.nodes).most_common())


def run_surgery(in_path: str | os.PathLike, out_path: str | os.PathLike, passes: list[str] | None = None) -> dict:
    """Run `passes` (default: DEFAULT_PIPELINE) on the model at `in_path`, save to `out_path`, return a report."""
    names = list(DEFAULT_PIPELINE if passes is None else passes)
    selected = [get_pass(name) for name in names]  # unknown names fail before the (slow) load
    started = time.perf_counter()
    graph = _load(Path(in_path))
    nodes_before, ops_before = len(graph.nodes), _op_counts(graph)
    steps = []
    for step in selected:
        count, clock = len(graph.nodes), time.perf_counter()
        changed = step(graph)
        steps.append({
            "name": step.name,
            "changed": changed,
            "node_delta": len(graph.nodes) - count,
            "seconds": round(time.perf_counter() - clock, 3),
        })
    model = gs.export_onnx(graph)
    try:
        save = _save_small if _weight_bytes(model) < EXTERNAL_DATA_BYTES else _save_external
        save(model, Path(out_path))
    except onnx.checker.ValidationError as err:
        raise T2VError(f"surgery produced an invalid model from {in_path}: {err}") from err
    return {
        "input": str(in_path),
        "output": str(out_path),
        "opset": graph.opset,
        "nodes_before": nodes_before,
        "nodes_after": len(graph.nodes),
        "ops_before": ops_before,
        "ops_after": _op_counts(graph),
        "passes": steps,
        "seconds": round(time.perf_counter() - started, 3),
    }
