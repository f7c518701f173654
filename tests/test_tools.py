"""The project's tools see the whole tree: ruff lints and format-checks build/ and tests/build/ too, mypy checks the runtime, and the
editable install is a plain path (no import hook) that both, and IDEs, can follow. Settings: pyproject.toml."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    """The venv's (else PATH's) executable of a dev tool; the test is skipped, saying how to get it, when missing."""
    found = shutil.which(name, path=str(BIN)) or shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed: `make setup` installs it (the dev extra)")
    return found


def run(args: list[str], cwd: Path = REPO, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    """Run a tool to completion, capturing its output."""
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_ruff_sees_the_build_folders() -> None:
    """Folders named build are this project's code: ruff's file list holds build/ and tests/build/."""
    listed = run([tool("ruff"), "check", "--show-files", "."]).stdout
    files = {Path(line.strip()).resolve().relative_to(REPO).as_posix() for line in listed.splitlines() if line.strip()}
    assert "build/export.py" in files and "tests/build/test_export.py" in files
    assert "runtime/pipeline.py" in files and "calibration/stage.py" in files


def test_ruff_lint_passes() -> None:
    """`ruff check` (rules in pyproject.toml) finds nothing."""
    result = run([tool("ruff"), "check", "--output-format", "concise", "."])
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_ruff_format_has_nothing_to_change() -> None:
    """The code is laid out as `ruff format` lays it out (run it to fix a failure)."""
    result = run([tool("ruff"), "format", "--check", "."])
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_mypy_passes_on_the_runtime() -> None:
    """mypy (pyproject.toml: the t2vtrt.runtime package) reports no errors."""
    result = run([tool("mypy")], timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_the_install_needs_no_import_hook(tmp_path: Path) -> None:
    """From any folder, t2vtrt.build imports through a plain sys.path entry (src/), not an editable-install finder."""
    code = (
        "import sys, t2vtrt.build.export, t2vtrt.runtime.pipeline, t2vtrt.calibration.stage\n"
        "print(*[name for name in sys.modules if name.startswith('__editable__')])"
    )
    result = run([sys.executable, "-c", code], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "", f"an import hook is installed ({result.stdout.strip()}): run `make setup` again"
