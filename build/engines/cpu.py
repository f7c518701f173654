"""The cpu target: ONNX Runtime graphs + manifest.json (docs/architecture.md#engines)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

from t2vtrt.build.artifacts import ArtifactPaths, components_of, read_export_info
from t2vtrt.build.provenance import check_chain, fresh_int8
from t2vtrt.build.engines.manifest import build_manifest, variant_entry, write_manifest
from t2vtrt.calibration.gate import gated_schedule
from t2vtrt.runtime.errors import T2VError
from t2vtrt.runtime.files import atomic_dir, sha256_file

TARGET = {"name": "cpu", "backend": "onnxruntime", "gpu": None, "tensorrt_version": None}


def cpu_sources(paths: ArtifactPaths, provenance: dict[str, Any] | None = None, notes: list[str] | None = None) -> dict[str, dict[str, Path]]:
    """Per component and precision, the graph the cpu target ships (patched graphs; INT8 when calibrated from them)."""
    sources: dict[str, dict[str, Path]] = {}
    for component in components_of(read_export_info(paths)):
        graph = paths.onnx(component, "opt")
        if not graph.is_file():
            raise T2VError(f"{graph} is missing: run `t2vtrt surgery` (or `make engines`) first")
        sources[component] = {"fp32": graph}
    for precision, kind in (("int8", "int8-u8s8"), ("int8-qdq", "int8-cpuverify")):
        graph = paths.onnx("denoiser", kind)
        if not graph.is_file():
            continue
        stale = fresh_int8(paths, provenance, graph) if provenance is not None else None
        if stale is not None:
            # A stale INT8 graph would run the previous model's weights under the new model's hash.
            (notes if notes is not None else []).append(f"denoiser {precision} dropped: {stale}")
            continue
        sources["denoiser"][precision] = graph
    return sources


def build_cpu_target(paths: ArtifactPaths, notes: list[str] | None = None) -> Path:
    """Assemble engines/cpu/ in a temp dir and swap it in whole: a reader never sees half a target."""
    from t2vtrt.build.graphfiles import external_data_files

    info = read_export_info(paths)
    provenance = check_chain(paths)
    notes = [] if notes is None else notes
    sources = cpu_sources(paths, provenance, notes)
    for line in notes:
        print(f"note: {line}", file=sys.stderr, flush=True)
    final = paths.engines_dir("cpu")
    with atomic_dir(final) as tmp:
        variants: dict[str, dict[str, Any]] = {}
        for component, by_precision in sources.items():
            variants[component] = {}
            for precision, src in by_precision.items():
                file = f"{component}.{precision}.onnx"
                fused = target_surgery(src, tmp / file)
                extra = [{"file": _relative(data, tmp), "sha256": sha256_file(data)} for data in external_data_files(tmp / file)]
                made_from = {"file": f"onnx/{src.name}", "sha256": sha256_file(src)}
                extras = {"target_passes": fused} if fused else {}
                if component == "denoiser" and precision != "fp32":
                    schedule = gated_schedule(paths.calib_dir / "gate.json", src, "fp32")
                    extras.update({"schedule": schedule} if schedule else {})
                entry = variant_entry(tmp, file, precision, "onnxruntime", made_from=made_from, **extras)
                variants[component][precision] = {**entry, "external_data": extra} if extra else entry
        _link_or_copy(paths.onnx_dir / info["tokenizer"]["file"], tmp / "tokenizer.json")
        manifest = build_manifest(info, TARGET, variants, "tokenizer.json", sha256_file(tmp / "tokenizer.json"), provenance=provenance)
        write_manifest(tmp, manifest)
    return final / "manifest.json"


def target_surgery(src: Path, dst: Path) -> dict[str, int]:
    """Write src to dst through the cpu target's passes (ONNX Runtime-only fusions); return what each changed.

    A graph none of them changes is copied byte for byte (weights beside it too), so its hash stays the source's.
    """
    from t2vtrt.build.graphfiles import external_data_files
    from t2vtrt.build.surgery.registry import TARGET_PIPELINES
    from t2vtrt.build.surgery.run import run_surgery

    work = dst.parent / f".{dst.name}.surgery"
    work.mkdir()
    try:
        report = run_surgery(src, work / dst.name, TARGET_PIPELINES["cpu"])
        changed = {step["name"]: step["changed"] for step in report["passes"] if step["changed"]}
        if changed:
            for written in work.iterdir():
                os.replace(written, dst.parent / written.name)
            return changed
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _link_or_copy(src, dst)
    for data in external_data_files(src):  # > 2 GB graphs keep weights beside them, by file name
        _link_or_copy(data, dst.parent / _relative(data, src.parent))
    return {}


def _relative(file: Path, folder: Path) -> str:
    """A file's name relative to the folder its graph is in (as the graph's external-data locations name it)."""
    return file.relative_to(folder).as_posix()


def _link_or_copy(src: Path, dst: Path) -> None:
    """Copy (not hard-link: a later stage rewriting the source must not change a shipped file)."""
    shutil.copyfile(src, dst)
    os.chmod(dst, 0o644)
