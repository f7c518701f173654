"""The build stages' progress: in a log (not a terminal) it is plain timed lines, not a bar drawn once at the end."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from t2vtrt.build import task_progress


def test_a_log_gets_plain_lines_at_start_and_end(monkeypatch: pytest.MonkeyPatch) -> None:
    """export's bar on a non-terminal stderr: a line when the stage starts and when its last item is done."""
    out = io.StringIO()
    monkeypatch.setattr(task_progress, "console", Console(file=out, force_terminal=False))
    with task_progress.task_bar("export", 2) as advance:
        advance("text_encoder")
        advance("denoiser")
    lines = out.getvalue().splitlines()
    assert lines[0] == "export: 0/2 (0 s)" and lines[-1].startswith("export: 2/2 (")
    assert "━" not in out.getvalue()


def test_quiet_prints_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """--quiet keeps a stage silent in a log too."""
    out = io.StringIO()
    monkeypatch.setattr(task_progress, "console", Console(file=out, force_terminal=False))
    with task_progress.task_bar("export", 1, quiet=True) as advance:
        advance()
    assert out.getvalue() == ""
