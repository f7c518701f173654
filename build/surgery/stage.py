"""The surgery stage over one model's artifacts: onnx/<c>.onnx -> onnx/<c>.opt.onnx + surgery.json."""

from __future__ import annotations

from typing import Any, Callable

from t2vtrt.build.artifacts import ArtifactPaths, components_of, read_export_info
from t2vtrt.build.provenance import graph_digest, surgery_made_from
from t2vtrt.runtime.files import write_json

from .registry import pipelines_for
from .run import run_surgery


def run_surgery_stage(paths: ArtifactPaths, passes: list[str] | None = None, on_done: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Patch every component with its pipeline (or `passes`), write the report, return it."""
    import onnxruntime

    onnxruntime.set_default_logger_severity(3)  # constant folding runs ORT; its optimizer warnings are noise here
    made_from = surgery_made_from(paths)  # a clear error when export has not run or did not finish
    info = read_export_info(paths)
    components, pipelines = components_of(info), pipelines_for(info["model"]["family"])
    report: dict[str, Any] = {"components": {}, "made_from": made_from}
    for component in components:
        chosen = passes if passes is not None else pipelines[component]
        report["components"][component] = run_surgery(paths.onnx(component), paths.onnx(component, "opt"), chosen)
        if on_done:
            on_done(component)
    report["graphs"] = {c: graph_digest(paths.onnx(c, "opt")) for c in components}
    write_json(paths.surgery_report, report)
    return report
