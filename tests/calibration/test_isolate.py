"""Quantizer children: results come back, failures and kills are one line naming the log."""

from __future__ import annotations

from pathlib import Path

import pytest

from t2vtrt.calibration.isolate import Call, run_isolated
from t2vtrt.runtime.errors import T2VError


def test_results_come_back_in_order(tmp_path: Path) -> None:
    """Each call runs in its own process; return values in call order."""
    calls = [Call("os.path:basename", {"p": f"x/{i}"}, tmp_path / f"{i}.log") for i in range(2)]
    assert run_isolated(*calls) == ["0", "1"]


def test_a_failure_is_one_line_with_its_log(tmp_path: Path) -> None:
    """An exception inside the tool comes back as its first line plus the log's path."""
    with pytest.raises(T2VError, match=r"getsize failed: FileNotFoundError: .*\(full log: .*bad.log\)"):
        run_isolated(Call("os.path:getsize", {"filename": str(tmp_path / "missing")}, tmp_path / "bad.log"))


def test_a_killed_child_names_the_likely_cause(tmp_path: Path) -> None:
    """SIGKILL (what the out-of-memory killer sends) leaves no exception: the error says what most often does it."""
    with pytest.raises(T2VError, match=r"die failed: its process was killed .*out-of-memory killer.*killed.log"):
        run_isolated(Call("child_targets:die", {"signal_number": 9}, tmp_path / "killed.log"))
