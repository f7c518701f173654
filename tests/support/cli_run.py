"""Running the `t2vtrt` console script as a user would, and the one-line error contract it must keep."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path
from typing import Any


def t2vtrt(*args: str, cwd: Path | None = None, **popen: Any) -> subprocess.CompletedProcess[str]:
    """Run the console script (quiet) and capture its output."""
    exe = Path(sys.executable).with_name("t2vtrt")
    return subprocess.run([str(exe), "--quiet", *args], capture_output=True, text=True, cwd=cwd, timeout=600, **popen)


def assert_one_line_error(result: subprocess.CompletedProcess[str], *words: str) -> None:
    """Exit 2, a single `error: ...` line naming the problem, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])


def snapshot(root: Path) -> dict[str, str]:
    """Every file under root (hidden ones too) by relative path -> sha256: 'byte-identical' is equality of two."""
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.endswith(".lock")
    }
