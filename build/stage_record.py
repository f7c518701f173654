"""The record each finished stage leaves in logs/<n>-<stage>.json, and the end-of-build summary read from them."""

from __future__ import annotations

import json
import time
from pathlib import Path

from rich.table import Table

from t2vtrt.runtime.files import write_json


def record_stage(root: Path, stage: str, seconds: float, files: list[Path]) -> None:
    """Write logs/<stage>.json: what the stage produced and how long it took (read by the summary)."""
    write_json(
        root / "logs" / f"{stage}.json",
        {
            "stage": stage,
            "seconds": round(seconds, 3),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "files": [{"file": str(f), "bytes": f.stat().st_size} for f in files if f.is_file()],
        },
    )


def summary_table(root: Path) -> Table:
    """Files, sizes and time per stage, in the order the stages ran."""
    table = Table(title=f"t2v-trt build: {root}")
    for column in ("stage", "seconds", "files", "MB"):
        table.add_column(column, justify="right" if column != "stage" and column != "files" else "left")
    logs = sorted((json.loads(p.read_text()) for p in (root / "logs").glob("*.json")), key=lambda r: r["finished"])
    for record in logs:
        names = ", ".join(Path(f["file"]).name for f in record["files"]) or "-"
        megabytes = sum(f["bytes"] for f in record["files"]) / 1e6
        table.add_row(record["stage"], f"{record['seconds']:.1f}", names, f"{megabytes:.1f}")
    return table
