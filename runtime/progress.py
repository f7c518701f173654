"""A denoising-step progress bar (rich, optional): the runtime works without it."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator


@contextlib.contextmanager
def step_bar(total: int, quiet: bool = False) -> Iterator[Callable[[int, int], None] | None]:
    """Yield a pipeline step callback that drives a rich bar; None when quiet or rich is absent."""
    if quiet:
        yield None
        return
    try:
        from rich.console import Console
        from rich.progress import Progress
    except ImportError:
        yield None
        return
    # stderr: stdout carries only the result line (a transient bar on stdout leaves a blank line there).
    with Progress(transient=True, console=Console(stderr=True)) as progress:
        task = progress.add_task("denoising", total=total)
        yield lambda step, steps: progress.update(task, completed=step, total=steps)
