"""`make engines` is incremental: a second run with nothing changed does no work."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")
def test_second_make_engines_is_a_no_op(tmp_path: Path) -> None:
    """First run builds every stage; the second runs none and returns in seconds."""
    venv = Path(sys.executable).parent.parent
    if not (venv / ".installed").is_file():
        pytest.skip(f"{venv} was not set up by `make setup` (no .installed stamp)")
    # MODEL=tiny: the mechanism is the same for every model, and tiny's stages are the quickest (CI builds the default).
    args = ["make", "-C", str(REPO), "engines", "MODEL=tiny", f"ARTIFACTS={tmp_path}", f"VENV={venv}", "QUIET=1"]
    first = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "t2vtrt --quiet export" in first.stdout and (tmp_path / "tiny" / "samples" / "sample.mp4").is_file()
    start = time.perf_counter()
    second = subprocess.run(args, capture_output=True, text=True, timeout=120)
    elapsed = time.perf_counter() - start
    assert second.returncode == 0, second.stderr[-2000:]
    for stage in ("export", "surgery", "engines", "generate"):
        assert f"t2vtrt --quiet {stage}" not in second.stdout, second.stdout
    assert elapsed < 5, elapsed
    # make agrees: every file target is up to date (`engines` itself is phony: it prints the summary).
    sample = tmp_path / "tiny" / "samples" / "sample.mp4"
    assert subprocess.run([*args[:3], "-q", str(sample), *args[4:]]).returncode == 0
