"""Progress in plain logs: a line when a phase starts and ends, and at a steady pace in between."""

from __future__ import annotations

import io
import time

from t2vtrt.runtime.step_progress import plain_lines


def test_plain_lines_are_paced() -> None:
    """Start, every `interval` seconds, and the end of a phase each give one line (the end once); calls in between give none."""
    now = [0.0]
    out = io.StringIO()
    on_event = plain_lines(out, interval=30.0, clock=lambda: now[0], heartbeat=False)
    for second, done in ((0, 0), (10, 1), (29, 2), (31, 3), (40, 4), (62, 5), (63, 6), (64, 6)):
        now[0] = float(second)
        on_event("sensitivity sweep", done, 6)
    assert out.getvalue().splitlines() == [
        "sensitivity sweep: 0/6 (0 s)",
        "sensitivity sweep: 3/6 (31 s)",
        "sensitivity sweep: 5/6 (62 s)",
        "sensitivity sweep: 6/6 (63 s)",
    ]


def test_a_quiet_phase_still_gets_a_line_every_interval() -> None:
    """No event for 70 s inside a phase: the heartbeat writes the last state at 30 s and 60 s; a finished phase is silent."""
    now = [0.0]
    out = io.StringIO()
    on_event = plain_lines(out, interval=30.0, clock=lambda: now[0], heartbeat=False)
    on_event("ranges", 1, 2)
    on_event("capture", 3, 3)
    for second in (10, 29, 30, 45, 60, 70):
        now[0] = float(second)
        on_event.tick()
    assert out.getvalue().splitlines() == [
        "ranges: 1/2 (0 s)",
        "capture: 3/3 (0 s)",
        "ranges: 1/2 (30 s, still running)",
        "ranges: 1/2 (60 s, still running)",
    ]


def test_the_heartbeat_thread_writes_without_events_and_stops_on_close() -> None:
    """A real thread: lines appear while nothing calls on_event, and none after close()."""
    out = io.StringIO()
    on_event = plain_lines(out, interval=0.2)
    on_event("calibrate", 0, 1)
    deadline = time.monotonic() + 5.0
    while out.getvalue().count("still running") < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    on_event.close()
    assert out.getvalue().count("still running") >= 2
    count = len(out.getvalue().splitlines())
    time.sleep(0.5)
    assert len(out.getvalue().splitlines()) == count
