"""Video outputs under faults: a full disk leaves the previous file (or nothing), never a broken one; png sequences whole."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cli_run import assert_one_line_error, snapshot, t2vtrt

from t2vtrt.runtime.errors import T2VError
from t2vtrt.runtime.video import read_video, write_video

PROMPT = "a red balloon rising over a lake"
# Big enough that no format fits in the disk's last 16 KB.
BIG = ("--frames", "16", "--height", "128", "--width", "128", "--steps", "1")


@pytest.mark.parametrize("name", ["x.mp4", "x.gif", "x.png"])
def test_full_disk_fails_in_one_line_and_leaves_nothing(tiny_engines: Path, full_disk, name: str) -> None:  # type: ignore[no-untyped-def]
    """ENOSPC (or EFBIG) while encoding: exit 2 naming the output and free space; no file, no temp file."""
    before = snapshot(full_disk.path)
    result = t2vtrt("generate", PROMPT, "--engines", str(tiny_engines), "-o", str(full_disk.path / name), *BIG, **full_disk.popen)
    assert_one_line_error(result, str(full_disk.path / name), "disk")
    assert snapshot(full_disk.path) == before  # nothing under the final name, no .tmp leftovers


def test_full_disk_keeps_the_previous_video(tiny_engines: Path, full_disk) -> None:  # type: ignore[no-untyped-def]
    """A rerun that cannot be written keeps the last good mp4 byte for byte."""
    small = full_disk.path / "keep.mp4"
    write_video(np.zeros((1, 16, 16, 3), np.uint8), small)  # fits in the room left
    before = snapshot(full_disk.path)
    result = t2vtrt("generate", PROMPT, "--engines", str(tiny_engines), "-o", str(small), *BIG, **full_disk.popen)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert snapshot(full_disk.path) == before
    assert read_video(small).shape == (1, 16, 16, 3)


def test_encoder_result_is_checked_before_the_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ffmpeg that 'succeeds' but leaves an unreadable file (its trailer write failed) is caught by the read-back."""
    import t2vtrt.runtime.video as video

    def truncated_clip(frames: np.ndarray, path: Path, fps: int, suffix: str) -> None:
        path.write_bytes(b"\0\0\0\x18ftypisom" + b"\0" * 20000)  # an mp4 header and nothing playable: what a full disk left

    monkeypatch.setattr(video, "_write_clip", truncated_clip)
    out = tmp_path / "x.mp4"
    out.write_bytes(b"previous")
    with pytest.raises(T2VError, match="could not be written whole"):
        write_video(np.zeros((2, 16, 16, 3), np.uint8), out)
    assert out.read_bytes() == b"previous" and sorted(p.name for p in tmp_path.iterdir()) == ["x.mp4"]


def test_png_rerun_with_fewer_frames_leaves_one_sequence(tmp_path: Path) -> None:
    """8 frames, then 3 under the same name: exactly f_000..f_002 remain, all from the second video."""
    out = tmp_path / "f.png"
    write_video(np.full((8, 16, 16, 3), 10, np.uint8), out)
    assert len(list(tmp_path.glob("f_*.png"))) == 8
    (tmp_path / "f_notes.png").write_bytes(b"not a frame of ours")
    write_video(np.full((3, 16, 16, 3), 200, np.uint8), out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f_000.png", "f_001.png", "f_002.png", "f_notes.png"]
    assert all(read_video(tmp_path / f"f_00{i}.png").mean() == 200 for i in range(3))


def test_png_rerun_through_the_cli(tiny_engines: Path, tmp_path: Path) -> None:
    """The same through `generate`: a glob of the output's frames is one video."""
    out = tmp_path / "clip.png"
    for frames in ("4", "2"):
        result = t2vtrt("generate", PROMPT, "--engines", str(tiny_engines), "-o", str(out), "--frames", frames, "--steps", "1")
        assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.glob("clip_*.png")) == ["clip_000.png", "clip_001.png"]


def test_bad_fps_and_frames_in_the_api(tmp_path: Path) -> None:
    """write_video refuses fps 0 and malformed frames in one line, writing nothing."""
    with pytest.raises(T2VError, match="fps must be"):
        write_video(np.zeros((1, 8, 8, 3), np.uint8), tmp_path / "x.gif", fps=0)
    with pytest.raises(T2VError, match="frames must be uint8"):
        write_video(np.zeros((1, 8, 8), np.uint8), tmp_path / "x.gif")
    assert list(tmp_path.iterdir()) == []
