"""A denoising-step progress bar (rich, optional): the runtime works without it."""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from typing import Any, Callable, Iterator, TextIO

LOG_INTERVAL_S = 30.0  # a non-terminal stderr (CI, `make | tee`) gets a progress line at least this often


@contextlib.contextmanager
def step_bar(total: int, quiet: bool = False) -> Iterator[Callable[[int, int], None] | None]:
    """Yield a pipeline step callback: a rich bar on a terminal, plain timed lines in a log; None when quiet."""
    if quiet:
        yield None
        return
    if not sys.stderr.isatty():
        on_event = plain_lines(sys.stderr)
        try:
            yield lambda step, steps: on_event("denoising", step, steps)
        finally:
            on_event.close()
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
    tasks: list[Any] = []  # rich's TaskID

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


class PlainLines:
    """on_event(phase, done, total) writing `phase: done/total (elapsed)` at a phase's start and end and every `interval` s.

    A phase that makes no progress for `interval` seconds (one long range pass, one slow denoiser call) still gets a
    line every `interval` seconds from a heartbeat thread, so a log never goes quiet while work runs.
    """

    def __init__(self, stream: TextIO, interval: float = LOG_INTERVAL_S, clock: Callable[[], float] = time.monotonic, heartbeat: bool = True) -> None:
        self.stream, self.interval, self.clock = stream, interval, clock
        self.started: dict[str, float] = {}
        self.last: dict[str, float] = {}
        self.state: dict[str, tuple[int, int]] = {}
        self.shown: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._heartbeat = heartbeat

    def __call__(self, phase: str, done: int, total: int) -> None:
        """One progress event."""
        with self._lock:
            now = self.clock()
            first = phase not in self.started
            self.started.setdefault(phase, now)
            self.state[phase] = (done, total)
            if first or (done >= total and self.shown[phase] != done) or now - self.last[phase] >= self.interval:
                self._write(phase, now, "")
            if self._heartbeat and self._thread is None:  # under the lock: calls on several threads start one heartbeat
                self._thread = threading.Thread(target=self._beat, name="progress-heartbeat", daemon=True)
                self._thread.start()

    def tick(self) -> None:
        """A line for every unfinished phase that has been quiet for `interval` seconds."""
        with self._lock:
            now = self.clock()
            for phase, (done, total) in self.state.items():
                if done < total and now - self.last[phase] >= self.interval:
                    self._write(phase, now, ", still running")

    def close(self) -> None:
        """Stop the heartbeat (idempotent)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.interval)

    def _write(self, phase: str, now: float, suffix: str) -> None:
        """Write one line (the lock is held)."""
        done, total = self.state[phase]
        self.last[phase], self.shown[phase] = now, done
        self.stream.write(f"{phase}: {done}/{total} ({now - self.started[phase]:.0f} s{suffix})\n")
        self.stream.flush()

    def _beat(self) -> None:
        """The heartbeat thread: tick a few times per interval until closed."""
        while not self._stop.wait(min(self.interval / 4, 5.0)):
            self.tick()


def plain_lines(stream: TextIO, interval: float = LOG_INTERVAL_S, clock: Callable[[], float] = time.monotonic, heartbeat: bool = True) -> PlainLines:
    """A PlainLines writer on `stream` (the callable the progress callbacks take)."""
    return PlainLines(stream, interval, clock, heartbeat)
