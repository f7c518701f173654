"""Atomic file writes and hashing: nothing is ever half-written under its final name.

Temp paths sit beside their final path as `.<name>.<pid>.<random>.tmp`: the pid says which process
owns one, so the next writer of the same path removes those whose process is gone (a kill -9 leftover)
and never one a live process is still writing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def _pid_alive(pid: int) -> bool:
    """True when a process with this id exists (ours included)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _owner(name: str, prefix: str) -> int | None:
    """The pid in a temp name `<prefix><pid>.<rest>`, or None when it is not one of ours."""
    if not name.startswith(prefix):
        return None
    head = name[len(prefix) :].split(".", 1)[0]
    return int(head) if head.isdigit() else None


def remove_stale(final: str | os.PathLike) -> list[Path]:
    """Remove temp paths of `final` left by dead processes (kill -9, power loss); return what was removed."""
    final = Path(final)
    if not final.parent.is_dir():
        return []
    removed = []
    for prefix in (f".{final.name}.", f".{final.name}.old."):
        for path in final.parent.iterdir():
            pid = _owner(path.name, prefix)
            if pid is None or _pid_alive(pid) or not (path.name.endswith(".tmp") or prefix.endswith(".old.")):
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _prefix(final: Path) -> str:
    """The temp-name prefix of `final` for this process."""
    return f".{final.name}.{os.getpid()}."


@contextlib.contextmanager
def temp_dir(final: str | os.PathLike) -> Iterator[Path]:
    """A scratch directory beside `final` (stale ones removed first), deleted when the block ends."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(final)
    tmp = Path(tempfile.mkdtemp(prefix=_prefix(final), suffix=".tmp", dir=final.parent))
    try:
        yield tmp
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def scratch_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp file path beside `final` (stale ones removed first), deleted when the block ends."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(final)
    fd, tmp = tempfile.mkstemp(prefix=_prefix(final), suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside `final`; rename it onto `final` only if the block succeeds."""
    with scratch_path(final) as tmp_path:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, 0o644)  # mkstemp makes 0600; a service user must be able to read artifacts
        os.replace(tmp_path, final)


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp directory beside `final`; swap it into place only if the block succeeds."""
    final = Path(final)
    with temp_dir(final) as tmp:
        yield tmp
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700
        old = None
        if final.exists():
            old = final.with_name(f".{final.name}.old.{os.getpid()}")
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write JSON atomically, sorted and indented for diffs."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
