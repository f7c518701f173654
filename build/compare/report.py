"""accuracy.json (machine-readable) and accuracy.md (the table a reviewer reads in CI logs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from t2vtrt.build.compare.adherence import adherence_rows
from t2vtrt.build.compare.gates import FAILED, PASSED, Check
from t2vtrt.build.compare.plots import write_plots
from t2vtrt.build.compare.run import CompareRun
from t2vtrt.runtime.files import atomic_path, write_json

_MARK = {PASSED: "pass", FAILED: "**FAIL**"}


def write_reports(reports_dir: Path, run: CompareRun) -> dict[str, Path]:
    """Write accuracy.json, accuracy.md and the PNGs; return their paths."""
    reports_dir.mkdir(parents=True, exist_ok=True)
    pngs = write_plots(reports_dir, run)
    run.report["plots"] = {name: str(path.relative_to(reports_dir)) for name, path in pngs.items()}
    write_json(reports_dir / "accuracy.json", run.report)
    with atomic_path(reports_dir / "accuracy.md") as tmp:
        tmp.write_text(markdown(run.report, run.checks))
    return {"json": reports_dir / "accuracy.json", "md": reports_dir / "accuracy.md", **pngs}


def markdown(report: dict[str, Any], checks: list[Check]) -> str:
    """The whole accuracy.md."""
    model, target, tools = report["model"], report["target"], report["tools"]
    verdict = "PASSED" if report["passed"] else "NOTHING COMPARED (failed)" if report.get("status") == "nothing compared" else "FAILED"
    lines = [
        f"# Accuracy: {model['name']} on {target['name']}: {verdict}",
        "",
        f"model hash `{model['hash'][:12]}`, target `{target['name']}` ({target['backend']}), {report['created']}, "
        f"onnxruntime {tools.get('onnxruntime')}, polygraphy {tools.get('polygraphy')}, tensorrt {tools.get('tensorrt')}",
        "",
    ]
    lines += _graph_table(checks)
    lines += _video_table(checks, report["eval"])
    lines += _diffusers_table(checks, report["model"].get("family", "?"))
    lines += adherence_rows(checks)
    lines += _golden_section(report["golden"], checks)
    if report["skipped"]:
        lines += ["## Skipped (not run, so not passed)", ""] + [f"- {s}" for s in report["skipped"]] + [""]
    if report["failures"]:
        lines += ["## Failures", ""] + [f"- {f}" for f in report["failures"]] + [""]
    return "\n".join(lines)


def _graph_table(checks: list[Check]) -> list[str]:
    """One row per graph variant and output: worst value over the recorded inputs, with its threshold."""
    rows = [c for c in checks if c.kind == "graph" and c.metrics]
    if not rows:
        return []
    out = [
        "## Graphs: each variant vs the FP32 ONNX reference (worst over the recorded inputs)",
        "",
        "| component | precision | output | status | rel L2 | max abs | cosine | PSNR dB | NaN/Inf |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for check in rows:
        component = check.subject.split(" ")[0]
        for output, m in check.metrics.items():
            t = check.thresholds or {}
            out.append(
                f"| {component} | {check.precision} | {output} | {_MARK[check.status]} | "
                f"{_cell(m['rel_l2'], t.get('rel_l2'), '<=')} | {_cell(m['max_abs'], t.get('max_abs'), '<=')} | "
                f"{_cell(m['cosine'], t.get('cosine'), '>=', '.6f')} | {_cell(m['psnr'], t.get('psnr'), '>=', '.1f')} | "
                f"{m['nonfinite']} |"
            )
    return out + [""]


def _video_table(checks: list[Check], eval_set: dict[str, Any]) -> list[str]:
    """One row per precision and case: PSNR/SSIM min and mean over the frames."""
    rows = [c for c in checks if c.kind == "video" and c.metrics]
    if not rows:
        return []
    objects = any("position_px_max" in m for c in rows for m in c.metrics.values())
    extra_head = " object position error px (max / mean) | object color error (max, 0-255) |" if objects else ""
    out = [
        f"## Videos: each precision vs the FP32 ONNX video ({len(eval_set['prompts'])} prompts x {len(eval_set['seeds'])} seeds, per frame)",
        "",
        "| precision | case | status | PSNR min dB | PSNR mean dB | SSIM min | SSIM mean |" + extra_head,
        "|---|---|---|---|---|---|---|" + ("---|---|" if objects else ""),
    ]
    for check in rows:
        out += _video_rows(check, check.precision)
    return out + [""]


def _diffusers_table(checks: list[Check], family: str) -> list[str]:
    """One row per precision and case: its video vs the family's diffusers pipeline on the same latents."""
    rows = [c for c in checks if c.kind == "diffusers-video" and c.metrics]
    if not rows:
        return []
    out = [
        f"## Videos vs diffusers: each precision vs the {family} family's diffusers pipeline (same weights, prompts, latents; per frame)",
        "",
        "| precision | case | status | PSNR min dB | PSNR mean dB | SSIM min | SSIM mean |",
        "|---|---|---|---|---|---|---|",
    ]
    for check in rows:
        out += _video_rows(check, check.precision)
    return out + [""]


def _video_rows(check: Check, label: str) -> list[str]:
    """Table rows of one video check (with the object's position and color error where measured)."""
    t = check.thresholds or {}
    return [
        f"| {label} | {key} | {_MARK[check.status]} | {_cell(m['psnr_min'], t.get('psnr_min'), '>=', '.2f')} | "
        f"{_cell(m['psnr_mean'], t.get('psnr_mean'), '>=', '.2f')} | {_cell(m['ssim_min'], t.get('ssim_min'), '>=', '.4f')} | "
        f"{_cell(m['ssim_mean'], t.get('ssim_mean'), '>=', '.4f')} |" + _object_cells(m)
        for key, m in check.metrics.items()
    ]


def _object_cells(metrics: dict[str, Any]) -> str:
    """The object-error cells of a video row ('' when not measured; 'missing in N frames' when one video lacks it)."""
    if "position_px_max" not in metrics:
        return ""
    missing = f" (object missing in {metrics['missing_frames']} frames)" if metrics["missing_frames"] else ""
    pos = "-" if metrics["position_px_max"] is None else f"{metrics['position_px_max']:.2f} / {metrics['position_px_mean']:.2f}"
    color = "-" if metrics["color_max"] is None else f"{metrics['color_max']:.1f}"
    return f" {pos}{missing} | {color} |"


def _golden_section(golden: dict[str, Any], checks: list[Check]) -> list[str]:
    """Today's reference vs the golden set, or why there was none."""
    out = [
        "## Golden set",
        "",
        f"`{golden['path']}`: {golden['status']}"
        + (
            f" (recorded {golden.get('created')}, onnxruntime {golden['tools'].get('onnxruntime')}, torch {golden['tools'].get('torch')})"
            if golden["status"] == "compared"
            else ""
        ),
        "",
    ]
    graph_rows = [c for c in checks if c.kind == "golden-graph" and c.metrics]
    if graph_rows:
        out += ["| graph | output | status | rel L2 | max abs | cosine | PSNR dB |", "|---|---|---|---|---|---|---|"]
        for check in graph_rows:
            t = check.thresholds or {}
            for output, m in check.metrics.items():
                out.append(
                    f"| {check.subject.split(' ', 1)[1]} | {output} | {_MARK[check.status]} | {_cell(m['rel_l2'], t.get('rel_l2'), '<=')} | "
                    f"{_cell(m['max_abs'], t.get('max_abs'), '<=')} | {_cell(m['cosine'], t.get('cosine'), '>=', '.6f')} | "
                    f"{_cell(m['psnr'], t.get('psnr'), '>=', '.1f')} |"
                )
        out.append("")
    for check in (c for c in checks if c.kind == "golden-video" and c.metrics):
        out += ["| video | case | status | PSNR min dB | PSNR mean dB | SSIM min | SSIM mean |", "|---|---|---|---|---|---|---|"]
        out += _video_rows(check, "fp32 reference") + [""]
    return out


def _cell(value: float, limit: float | None, sign: str, fmt: str = ".3g") -> str:
    """A metric with its threshold, e.g. `1.2e-07 (<= 0.0001)`."""
    text = format(value, fmt)
    return text if limit is None else f"{text} ({sign} {limit:g})"
