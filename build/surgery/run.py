"""Load a model, run surgery passes, check and save it atomically, and report what changed."""

from __future__ import annotations

import collections
import os
import time
from pathlib import Path
from typing import Any

import onnx
import onnx_graphsurgeon as gs

from t2vtrt.build.graphfiles import import_graph, save_graph, spill_constants
from t2vtrt.runtime.errors import T2VError, os_error
from t2vtrt.runtime.files import temp_dir

from .registry import DEFAULT_PIPELINE, get_pass


def _load(path: Path, spill: Path) -> gs.Graph:
    """Import the model at `path`; its large weights stay in their files (or in `spill`) until a pass reads them."""
    try:
        return import_graph(path, spill=spill)  # its errors name the file and the fix
    except T2VError:
        raise
    except OSError as err:  # e.g. a full disk while a one-file graph's weights move to scratch space
        raise os_error(err, f"loading the surgery input {path}") from err
    except Exception as err:  # protobuf DecodeError, ...
        raise T2VError(f"surgery input {path} is not a readable ONNX model: {err}") from err


def _save(graph: gs.Graph, out: Path, spill: Path) -> None:
    """Export `graph` and save it (one file, or one <out>.data past graphfiles' size limit), never holding every weight."""
    spill_constants(graph, spill)  # weights a pass rewrote: to disk before export copies them
    save_graph(gs.export_onnx(graph), out)


def _op_counts(graph: gs.Graph) -> dict[str, int]:
    """Node count per op type, most frequent first."""
    return dict(collections.Counter(node.op for node in graph.nodes).most_common())


def _run_pass(step: Any, graph: gs.Graph) -> dict[str, Any]:
    """Run one pass on `graph`; its report entry."""
    count, clock = len(graph.nodes), time.perf_counter()
    changed = step(graph)
    return {"name": step.name, "changed": changed, "node_delta": len(graph.nodes) - count, "seconds": round(time.perf_counter() - clock, 3)}


def run_surgery(in_path: str | os.PathLike, out_path: str | os.PathLike, passes: list[str] | None = None) -> dict:
    """Run `passes` (default: DEFAULT_PIPELINE) on the model at `in_path`, save to `out_path`, return a report."""
    names = list(DEFAULT_PIPELINE if passes is None else passes)
    selected = [get_pass(name) for name in names]  # unknown names fail before the (slow) load
    started = time.perf_counter()
    source, out = Path(in_path), Path(out_path)
    if not source.is_file():
        raise T2VError(f"surgery input not found: {source} (run the export stage first)")
    out.parent.mkdir(parents=True, exist_ok=True)
    # Scratch files for weights moved out of memory: a one-file input's at load, rewritten ones before export.
    # temp_dir: named by this process, so a later run removes it when a kill -9 left it behind.
    with temp_dir(out) as work:
        graph = _load(source, Path(work) / "loaded.bin")
        nodes_before, ops_before = len(graph.nodes), _op_counts(graph)
        steps = [_run_pass(step, graph) for step in selected]
        try:
            _save(graph, out, Path(work) / "rewritten.bin")
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
