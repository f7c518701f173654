"""Atomic writes: a failed write leaves nothing behind under the final name."""

from __future__ import annotations

from pathlib import Path

import pytest

from t2vtrt.runtime.files import atomic_dir, atomic_path, sha256_file


def test_atomic_path_renames_on_success(tmp_path: Path) -> None:
    """The file appears whole, readable by others, with no temp file left."""
    target = tmp_path / "a" / "out.bin"
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"data")
        assert not target.exists()
    assert target.read_bytes() == b"data"
    assert oct(target.stat().st_mode & 0o777) == "0o644"
    assert [p.name for p in target.parent.iterdir()] == ["out.bin"]


def test_atomic_path_keeps_the_old_file_on_failure(tmp_path: Path) -> None:
    """An exception mid-write leaves the previous version and no temp file."""
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("disk full")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_atomic_dir_swaps_whole_directories(tmp_path: Path) -> None:
    """A directory is replaced only when the new one is complete."""
    target = tmp_path / "cpu"
    with atomic_dir(target) as tmp:
        (tmp / "manifest.json").write_text("{}")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "half.onnx").write_text("x")
            raise RuntimeError("build failed")
    assert sorted(p.name for p in target.iterdir()) == ["manifest.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cpu"]


def test_sha256_file(tmp_path: Path) -> None:
    """Known digest of a known content."""
    path = tmp_path / "x"
    path.write_bytes(b"abc")
    assert sha256_file(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
