"""A denoising-step progress bar (rich, optional): the runtime works without it."""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Callable, Iterator, TextIO

LOG_INTERVAL_S = 30.0  # a non-terminal stderr (CI, `make | tee`) gets a progress line at least this often


@contextlib.contextmanager
def step_bar(total: int, quiet: bool = False) -> Iterator[Callable[[int, int], None] | None]:
    """Yield a pipeline step callback: a rich bar on a terminal, plain timed lines in a log; None when quiet."""
    if quiet:
        yield None
        return
    if not sys.stderr.isatty():
        on_event = plain_lines(sys.stderr)
        yield lambda step, steps: on_event("denoising", step, steps)
        return
    try:
        from rich.console import Console
        from rich.progress import Progress
    except ImportError:
        yield None
        return
    # stderr: stdout carries only the result line (a transient bar on stdout leaves a blank line there). The bar
    # starts at the first finished step, so a request refused before denoising prints its error line alone.
    progress = Progress(transient=True, console=Console(stderr=True))
    tasks: list[int] = []

    def update(step: int, steps: int) -> None:
        if not tasks:
            progress.start()
            tasks.append(progress.add_task("denoising", total=steps))
        progress.update(tasks[0], completed=step, total=steps)

    try:
        yield update
    finally:
        if tasks:
            progress.stop()


def plain_lines(stream: TextIO, interval: float = LOG_INTERVAL_S,
                clock: Callable[[], float] = time.monotonic) -> Callable[[str, int, int], None]:
    """on_event(phase, done, total) writing `phase: done/total (elapsed)` at a phase's start and end and every `interval` s."""
    started: dict[str, float] = {}
    last: dict[str, float] = {}
    shown: dict[str, int] = {}

    def on_event(phase: str, done: int, total: int) -> None:
        now = clock()
        first = phase not in started
        started.setdefault(phase, now)
        if first or (done >= total and shown[phase] != done) or now - last[phase] >= interval:
            last[phase], shown[phase] = now, done
            stream.write(f"{phase}: {done}/{total} ({now - started[phase]:.0f} s)\n")
            stream.flush()

    return on_event
