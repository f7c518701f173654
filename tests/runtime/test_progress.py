"""Progress in plain logs: a line when a phase starts and ends, and at a steady pace in between."""

from __future__ import annotations

import io

from t2vtrt.runtime.progress import plain_lines


def test_plain_lines_are_paced() -> None:
    """Start, every `interval` seconds, and the end of a phase each give one line (the end once); calls in between give none."""
    now = [0.0]
    out = io.StringIO()
    on_event = plain_lines(out, interval=30.0, clock=lambda: now[0])
    for second, done in ((0, 0), (10, 1), (29, 2), (31, 3), (40, 4), (62, 5), (63, 6), (64, 6)):
        now[0] = float(second)
        on_event("sensitivity sweep", done, 6)
    assert out.getvalue().splitlines() == ["sensitivity sweep: 0/6 (0 s)", "sensitivity sweep: 3/6 (31 s)",
                                           "sensitivity sweep: 5/6 (62 s)", "sensitivity sweep: 6/6 (63 s)"]
