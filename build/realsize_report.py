"""`make realsize`: every stage on the real-size model, each timed and its peak RSS measured, plus the GPU dry-run plans.

Each stage runs as its own `t2vtrt` process, the way a user runs it; its peak RSS is the kernel's
ru_maxrss of that process tree (os.wait4), not an estimate. The report (reports/realsize.{json,md}
under the model's artifacts) holds per stage wall time, peak RSS and its ratio to the model's FP32
weight bytes, and per GPU profile the dry-run's VRAM table.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from t2vtrt.build.bench.host import host_info
from t2vtrt.runtime.errors import T2VError
from t2vtrt.runtime.files import atomic_path, write_json

GIB = 1024**3
DRY_RUN_GPUS = ("rtx3060", "rtx4060", "rtx4090")
REPORT_NAME = "realsize"


@dataclass(frozen=True)
class StageRun:
    """One measured stage: its command, wall seconds, peak RSS bytes and exit status."""

    name: str
    argv: list[str]
    wall_s: float
    peak_rss: int
    returncode: int


def stage_commands(model_dir: Path, artifacts: Path, int8: bool, gpus: tuple[str, ...]) -> list[tuple[str, list[str]]]:
    """(stage name, t2vtrt arguments) in build order: export, surgery, [calibrate, quantize], cpu engines, dry-run plans."""
    common = ["--model", str(model_dir), "--artifacts", str(artifacts)]
    stages = [("export", ["export", *common]), ("surgery", ["surgery", *common])]
    if int8:
        stages += [("calibrate", ["calibrate", *common]), ("quantize", ["quantize", *common])]
    stages.append(("engines cpu", ["engines", *common, "--gpu", "cpu"]))
    for gpu in gpus:
        stages.append((f"plan {gpu}", ["engines", *common, "--gpu", gpu, "--dry-run"]))
        stages.append((f"plan {gpu} --low-vram", ["engines", *common, "--gpu", gpu, "--dry-run", "--low-vram"]))
    return stages


# Forks the stage from a fresh, small interpreter and reports the stage's own ru_maxrss. Linux carries a process's
# peak RSS across exec, and a child forked from a large parent (a test runner, a notebook) starts at the parent's
# RSS: measured from here, every stage would read at least this process's size.
LAUNCHER = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as out:
    out.write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_measured(name: str, argv: list[str], log: Path, echo: Callable[[str], None]) -> StageRun:
    """Run one command with its output appended to `log`; wall time and the peak RSS of its process tree."""
    echo(f"realsize: {name}: {' '.join(argv)}")
    with tempfile.TemporaryDirectory() as scratch:
        peak_file = Path(scratch) / "maxrss"
        start = time.monotonic()
        with open(log, "a") as out:
            out.write(f"\n=== {name}: {' '.join(argv)}\n")
            out.flush()
            code = subprocess.run(
                [sys.executable, "-c", LAUNCHER, str(peak_file), *argv],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            ).returncode
        wall = time.monotonic() - start
        peak_kib = int(peak_file.read_text()) if peak_file.is_file() else 0  # ru_maxrss is KiB on Linux
    run = StageRun(name, argv, round(wall, 1), peak_kib * 1024, code)
    echo(f"realsize: {name}: {'ok' if code == 0 else f'FAILED (exit {code})'} in {wall:.0f} s, peak RSS {run.peak_rss / GIB:.2f} GiB")
    return run


def weight_bytes(model_dir: Path) -> int:
    """FP32 weight bytes of the model: the safetensors files' sizes (headers are a rounding error)."""
    return sum(f.stat().st_size for f in model_dir.glob("*/*.safetensors"))


def vram_table(plan_file: Path) -> dict[str, Any]:
    """The figures of a dry-run plan.json a reader compares: per component weights and activations, and the totals."""
    plan = json.loads(plan_file.read_text())
    components = {}
    for name, comp in plan["components"].items():
        components[name] = {
            "precision": comp["runtime_precision"],
            "built": sorted(comp["variants"]),
            "weights_gib": round(comp["weights_bytes"] / GIB, 3),
            "activations_gib": round(comp["activation_bytes"] / GIB, 3),
            "unknown_shapes": comp["unknown_shapes"],
        }
    vram = plan["vram"]
    return {
        "components": components,
        "mode": vram["mode"],
        "fits": vram["fits"],
        "gib": vram["gib"],
        "alternatives": vram.get("alternatives", []),
        "ranges": plan["ranges"],
    }


def run_all(
    model_dir: Path, artifacts: Path, int8: bool = True, gpus: tuple[str, ...] = DRY_RUN_GPUS, echo: Callable[[str], None] = print
) -> dict[str, Any]:
    """Every stage in order (stopping at the first failure), then the report written beside the model's artifacts."""
    if not (model_dir / "model_index.json").is_file():
        raise T2VError(f"{model_dir} is not a model directory: run `make realsize-model` (or `t2vtrt make-realsize-model --out {model_dir}`)")
    root = artifacts / model_dir.name
    reports = root / "reports"
    reports.mkdir(parents=True, exist_ok=True)
    log = reports / f"{REPORT_NAME}.log"
    log.write_text("")
    t2vtrt = [sys.executable, "-m", "t2vtrt.cli"]  # not --quiet: each stage's plain progress lines go to the log
    runs: list[StageRun] = []
    plans: dict[str, Any] = {}
    for name, args in stage_commands(model_dir, artifacts, int8, gpus):
        run = run_measured(name, [*t2vtrt, *args], log, echo)
        runs.append(run)
        if run.returncode != 0:
            break
        if name.startswith("plan "):
            gpu = args[args.index("--gpu") + 1]
            plans[name.removeprefix("plan ")] = vram_table(root / "engines" / gpu / "plan.json")
    report = {
        "model": str(model_dir),
        "realsize": _read_json(model_dir / "realsize.json"),
        "host": host_info(),
        "weights_fp32_bytes": weight_bytes(model_dir),
        "int8": int8,
        "stages": [asdict(r) for r in runs],
        "plans": plans,
        "log": str(log),
    }
    write_json(reports / f"{REPORT_NAME}.json", report)
    with atomic_path(reports / f"{REPORT_NAME}.md") as tmp:
        tmp.write_text("\n".join(markdown(report)) + "\n")
    failed = [r.name for r in runs if r.returncode != 0]
    if failed:
        raise T2VError(f"realsize: stage {failed[0]!r} failed; its output is in {log}")
    return report


def markdown(report: dict[str, Any]) -> list[str]:
    """The report as Markdown tables: stages, then one VRAM table per plan."""
    host = report["host"]
    weights = report["weights_fp32_bytes"]
    lines = [
        f"# Real-size run: {report['model']}",
        "",
        f"Host: {host['cpu']} ({host.get('cpu_family_model', '?')}), {host['cores']} cores. "
        f"FP32 weights {weights / GIB:.2f} GiB. INT8: {'yes' if report['int8'] else 'no'}.",
        "",
        "| stage | wall | peak RSS | x FP32 weights | result |",
        "|---|---|---|---|---|",
    ]
    for s in report["stages"]:
        result = "ok" if s["returncode"] == 0 else f"exit {s['returncode']}"
        lines.append(f"| {s['name']} | {s['wall_s']:.0f} s | {s['peak_rss'] / GIB:.2f} GiB | {s['peak_rss'] / weights:.2f} | {result} |")
    for name, plan in report["plans"].items():
        g = plan["gib"]
        lines += [
            "",
            f"## {name}: {plan['mode']} needs {g['required']} of {g['total']} GiB: " + ("fits" if plan["fits"] else "DOES NOT FIT"),
            "",
            "ranges [min, opt, max]: " + ", ".join(f"{axis} {r}" for axis, r in plan["ranges"].items()),
            "",
            "| component | runs | built | weights GiB | activations GiB | unknown shapes |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {c} | {v['precision']} | {', '.join(v['built'])} | {v['weights_gib']} | {v['activations_gib']} | {v['unknown_shapes']} |"
            for c, v in plan["components"].items()
        ]
        lines += [f"- would fit: {a}" for a in plan["alternatives"]]
    return lines


def _read_json(path: Path) -> Any:
    """A JSON file, or None when absent."""
    return json.loads(path.read_text()) if path.is_file() else None
