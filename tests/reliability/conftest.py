"""Fault fixtures: a full disk, a dead process's id, a private diffusers copy of the tiny model."""

from __future__ import annotations

import resource
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest

from t2vtrt.build.artifacts import ArtifactPaths

FREE_BYTES = 16 * 1024  # room left on the "full" disk: enough to create files, never a video or a graph


@dataclass
class FullDisk:
    """A folder whose file system is (nearly) full, and how to run a child process against it."""

    path: Path
    kind: str  # "tmpfs" (ENOSPC) or "rlimit" (EFBIG: the size-limit fallback where mounting is not allowed)
    popen: dict[str, Any] = field(default_factory=dict)


def _limit_file_size() -> None:
    """In the child: no file may grow past FREE_BYTES (as if the disk had that much room)."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (FREE_BYTES, FREE_BYTES))


@pytest.fixture()
def full_disk(tmp_path: Path) -> Iterator[FullDisk]:
    """A small tmpfs filled up to FREE_BYTES when this machine lets us mount one, else a file-size limit."""
    mount = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    mount.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True).returncode == 0
    if not mounted:
        yield FullDisk(mount, "rlimit", {"preexec_fn": _limit_file_size})
        return
    try:
        filler = mount / ".filler"
        with open(filler, "wb") as handle:
            handle.write(b"\0" * (1024 * 1024 - FREE_BYTES - 8192))
        yield FullDisk(mount, "tmpfs")
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


@pytest.fixture()
def dead_pid() -> int:
    """The id of a process that has exited (what a kill -9 leaves behind in temp names)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture()
def model_copy(tiny_paths: ArtifactPaths, tmp_path: Path) -> Path:
    """The tiny model as a local diffusers directory a test may change."""
    dst = tmp_path / "mymodel"
    shutil.copytree(tiny_paths.model_dir, dst)
    return dst
