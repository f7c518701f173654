"""One rich progress bar per calibration phase; --quiet turns them off."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

Event = Callable[[str, int, int], None]


@contextlib.contextmanager
def phase_bars(quiet: bool = False) -> Iterator[Event | None]:
    """Yield on_event(phase, done, total) that drives a bar per phase; None when quiet."""
    if quiet:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from t2vtrt.build.progress import console

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        tasks: dict[str, int] = {}

        def on_event(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = progress.add_task(phase, total=total)
            progress.update(tasks[phase], completed=done, total=total)

        yield on_event
