"""rich progress bars and the end-of-build summary; --quiet turns them all off."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from t2vtrt.runtime.files import write_json

console = Console(stderr=True)


@contextlib.contextmanager
def task_bar(description: str, total: int, quiet: bool = False) -> Iterator[Any]:
    """A progress bar; yields `advance(label)`. With quiet, a no-op."""
    if quiet:
        yield lambda label=None: None
        return
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.fields[label]}"))
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(description, total=total, label="")

        def advance(label: str | None = None) -> None:
            progress.update(task, advance=1, label=label or "")

        yield advance


def record_stage(root: Path, stage: str, seconds: float, files: list[Path]) -> None:
    """Write logs/<stage>.json: what the stage produced and how long it took (read by the summary)."""
    write_json(root / "logs" / f"{stage}.json", {
        "stage": stage,
        "seconds": round(seconds, 3),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": [{"file": str(f), "bytes": f.stat().st_size} for f in files if f.is_file()],
    })


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
