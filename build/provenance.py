"""The hash chain from model to engine: what each derived artifact was made from, and the checks on it.

model dir --(export.json: model hash, graphs)--> onnx/<c>.onnx
          --(surgery.json: made_from, graphs)--> onnx/<c>.opt.onnx
          --(provenance.json: per INT8 graph, made_from)--> onnx/denoiser.int8*.onnx
          --(manifest.json: provenance, per variant made_from)--> engines/<target>/

A link that does not hold means a stage was skipped after its inputs changed: the engines stage refuses
(or, for an INT8 variant, drops it) with one line that names the stage to re-run.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from t2vtrt.build.artifacts import ArtifactPaths, components_of, read_export_info
from t2vtrt.runtime.errors import T2VError
from t2vtrt.runtime.files import sha256_file, write_json

INT8_KINDS = ("int8", "int8-cpuverify", "int8-u8s8")
QUANTIZE_AGAIN = "re-run `t2vtrt calibrate` and `t2vtrt quantize` (make engines INT8=1)"


def graph_digest(graph: Path) -> str:
    """sha256 of a graph file, folded with its `<name>.data` weights when it keeps them beside it (> 2 GB models)."""
    digest = sha256_file(graph)
    data = graph.with_name(f"{graph.name}.data")
    if data.is_file():
        digest = hashlib.sha256(f"{digest}{sha256_file(data)}".encode()).hexdigest()
    return digest


def ledger_path(paths: ArtifactPaths) -> Path:
    """onnx/provenance.json: per graph a later stage wrote into onnx/, its sha256 and what it was made from."""
    return paths.onnx_dir / "provenance.json"


def _rel(path: Path, paths: ArtifactPaths) -> str:
    """A path relative to the model's artifacts root, for messages."""
    try:
        return str(path.relative_to(paths.root))
    except ValueError:
        return str(path)


def export_graphs(paths: ArtifactPaths, info: dict[str, Any]) -> dict[str, str]:
    """export.json's graph hashes, checked against the files; a one-line error naming export otherwise."""
    graphs = info.get("graphs")
    if not graphs:
        raise T2VError(f"{paths.export_info} records no graph hashes (written by an older t2v-trt): re-run `t2vtrt export`")
    for component, expected in graphs.items():
        graph = paths.onnx(component)
        if not graph.is_file() or sha256_file(graph) != expected:
            raise T2VError(
                f"{_rel(graph, paths)} is not the graph export.json records (a partial or interrupted export): "
                f"re-run `t2vtrt export --model {info['model']['name']}`"
            )
    return dict(graphs)


def surgery_made_from(paths: ArtifactPaths) -> dict[str, Any]:
    """What the surgery stage is about to read: the model hash and the exported graphs' hashes."""
    info = read_export_info(paths)
    return {"model_hash": info["model"]["hash"], "graphs": export_graphs(paths, info)}


def check_surgery(paths: ArtifactPaths, info: dict[str, Any]) -> dict[str, str]:
    """The patched graphs' hashes, when surgery.json says they were made from the current export."""
    name = info["model"]["name"]
    again = f"re-run `t2vtrt surgery --model {name}`"
    if not paths.surgery_report.is_file():
        raise T2VError(f"{_rel(paths.surgery_report, paths)} is missing: {again}")
    report = json.loads(paths.surgery_report.read_text())
    made_from = report.get("made_from")
    if not made_from or "graphs" not in report:
        raise T2VError(f"{_rel(paths.surgery_report, paths)} records no hashes (written by an older t2v-trt): {again}")
    current = {"model_hash": info["model"]["hash"], "graphs": export_graphs(paths, info)}
    if made_from != current:
        raise T2VError(f"onnx/*.opt.onnx were made from another export (the model or its graphs changed since): {again}")
    for component in components_of(info):
        graph = paths.onnx(component, "opt")
        if not graph.is_file() or graph_digest(graph) != report["graphs"].get(component):
            raise T2VError(f"{_rel(graph, paths)} is not the graph surgery.json records (changed or half-written): {again}")
    return dict(report["graphs"])


def quantize_inputs(paths: ArtifactPaths) -> dict[str, Any]:
    """What the quantize stage reads: the model hash, the FP32 denoiser (graph_digest: with its .data) and the plan (hashes)."""
    info = read_export_info(paths)
    plan = paths.calib_dir / "precision_plan.json"
    return {
        "model_hash": info["model"]["hash"],
        "denoiser.opt.onnx": graph_digest(paths.onnx("denoiser", "opt")) if paths.onnx("denoiser", "opt").is_file() else None,
        "precision_plan.json": _sha_or_none(plan),
    }


def _sha_or_none(path: Path) -> str | None:
    """sha256 of a file, None when it is absent."""
    return sha256_file(path) if path.is_file() else None


def record_quantized(paths: ArtifactPaths, made_from: dict[str, Any]) -> None:
    """After quantize: note each INT8 graph's hash with the inputs it was made from."""
    ledger = read_ledger(paths)
    for kind in INT8_KINDS:
        graph = paths.onnx("denoiser", kind)
        if graph.is_file():
            ledger[graph.name] = {"sha256": sha256_file(graph), "made_from": made_from}
    write_json(ledger_path(paths), ledger)


def read_ledger(paths: ArtifactPaths) -> dict[str, Any]:
    """onnx/provenance.json, {} when absent or unreadable (then nothing in it is trusted)."""
    try:
        return json.loads(ledger_path(paths).read_text())
    except (OSError, ValueError):
        return {}


def int8_staleness(paths: ArtifactPaths, graph: Path, model_hash: str, opt_sha: str) -> str | None:
    """Why an INT8 graph must not ship with the current FP32 denoiser (None: it was made from it)."""
    sha = sha256_file(graph)
    entry = read_ledger(paths).get(graph.name)
    if entry and entry.get("sha256") == sha:
        made = entry["made_from"]
        if made.get("model_hash") != model_hash or made.get("denoiser.opt.onnx") != opt_sha:
            return f"{_rel(graph, paths)} was made from another model or denoiser graph"
        return None
    # No ledger entry (quantized through the Python API): the precision plan names the graph it was calibrated on.
    plan_file = paths.calib_dir / "precision_plan.json"
    try:
        source = json.loads(plan_file.read_text())["source"]["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"{_rel(graph, paths)} has no record of what it was made from"
    if source != sha256_file(paths.onnx("denoiser", "opt")):  # the plan hashes the graph file, not its .data
        return f"{_rel(graph, paths)} was calibrated on another denoiser graph"
    return None


def check_chain(paths: ArtifactPaths) -> dict[str, Any]:
    """Every link up to the patched graphs (refusing a broken one); the manifest's `provenance` record."""
    info = read_export_info(paths)
    opt = check_surgery(paths, info)
    return {"model_hash": info["model"]["hash"], "export_graphs": dict(info["graphs"]), "opt_graphs": opt}


def fresh_int8(paths: ArtifactPaths, provenance: dict[str, Any], graph: Path) -> str | None:
    """One line saying why an INT8 graph is dropped, or None when it matches the chain."""
    reason = int8_staleness(paths, graph, provenance["model_hash"], provenance["opt_graphs"]["denoiser"])
    return None if reason is None else f"{reason}: not shipped; {QUANTIZE_AGAIN}"
