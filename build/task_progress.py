"""The build's rich progress bars on stderr; --quiet turns them off."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from t2vtrt.runtime.step_progress import plain_lines

console = Console(stderr=True)


@contextlib.contextmanager
def task_bar(description: str, total: int, quiet: bool = False) -> Iterator[Any]:
    """A progress bar; yields `advance(label)`. With quiet, a no-op."""
    if quiet:
        yield lambda label=None: None
        return
    if not console.is_terminal:  # a log (CI, `make | tee`): timed plain lines, a heartbeat while one item runs long
        lines = plain_lines(console.file)
        done = [0]
        lines(description, 0, total)

        def step(label: str | None = None) -> None:
            done[0] += 1
            lines(description, done[0], total)

        try:
            yield step
        finally:
            lines.close()
        return
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.fields[label]}"))
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(description, total=total, label="")

        def advance(label: str | None = None) -> None:
            progress.update(task, advance=1, label=label or "")

        yield advance
