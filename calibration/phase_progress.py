"""Calibration progress: a rich bar per phase in a terminal; plain lines at a steady pace in logs (CI, make | tee)."""

from __future__ import annotations

import contextlib
import sys
from typing import Callable, Iterator, TextIO

from t2vtrt.runtime.step_progress import plain_lines

Event = Callable[[str, int, int], None]


@contextlib.contextmanager
def phase_bars(quiet: bool = False, stream: TextIO | None = None) -> Iterator[Event | None]:
    """Yield on_event(phase, done, total): bars on a terminal (none when quiet), plain timed lines otherwise."""
    stream = stream or sys.stderr
    if not stream.isatty():
        lines = plain_lines(stream)
        try:
            yield lines
        finally:
            lines.close()
        return
    if quiet:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from t2vtrt.build.task_progress import console

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console) as progress:
        tasks: dict[str, int] = {}

        def on_event(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = progress.add_task(phase, total=total)
            progress.update(tasks[phase], completed=done, total=total)

        yield on_event
