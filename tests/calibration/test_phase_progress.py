"""Calibration progress: a CI log gets plain lines even with --quiet."""

from __future__ import annotations

import io

from t2vtrt.calibration.phase_progress import phase_bars


def test_a_log_gets_lines_even_when_quiet() -> None:
    """--quiet drops the terminal bars, never the progress a CI log needs (stderr that is not a terminal)."""
    out = io.StringIO()
    with phase_bars(quiet=True, stream=out) as on_event:
        assert on_event is not None
        on_event("ranges", 1, 2)
    assert out.getvalue() == "ranges: 1/2 (0 s)\n"
