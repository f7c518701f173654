"""Write frames (F, H, W, 3) uint8 as mp4, gif or a folder of png frames.

Every format is written aside, checked, and only then renamed into place: a full disk or a failing
encoder leaves the previous output (or nothing), never a file that does not play.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from t2vtrt.runtime.errors import T2VError, os_error
from t2vtrt.runtime.files import atomic_path, remove_stale, temp_dir

FORMATS = (".mp4", ".gif", ".png")


def check_output(path: str | Path) -> Path:
    """Refuse an output path that cannot be written before any work is done: format, folder, permissions."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise T2VError(f"cannot write {path}: the output must end in {', '.join(FORMATS)}")
    if path.is_dir():
        raise T2VError(f"cannot write {path}: it is a folder; name a file such as {path / 'video.mp4'}")
    folder = next((p for p in (path.parent, *path.parent.parents) if p.exists()), Path("."))
    if not folder.is_dir():
        raise T2VError(f"cannot write {path}: {folder} is a file, not a folder; pick another output path")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise T2VError(f"cannot write {path}: {folder} is not writable; pick a folder you can write to")
    return path


def check_fps(fps: int) -> int:
    """Frames per second: a whole number >= 1."""
    if isinstance(fps, bool) or not isinstance(fps, int) or fps < 1:
        raise T2VError(f"fps must be a whole number >= 1, got {fps!r}")
    return fps


def write_video(frames: np.ndarray, path: str | Path, fps: int = 8) -> Path:
    """Write a clip atomically; .png writes path_stem_000.png ... beside it (the whole sequence replaced)."""
    path = check_output(path)
    check_fps(fps)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise T2VError(f"frames must be uint8 (F, H, W, 3), got {frames.dtype} {frames.shape}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".png":
            return _write_pngs(frames, path)
        with atomic_path(path) as tmp:
            tmp_file = tmp.with_suffix(suffix)  # imageio picks the writer from the suffix
            try:
                _write_clip(frames, tmp_file, fps, suffix)
                _check_clip(tmp_file, len(frames), path)
                tmp_file.replace(tmp)
            finally:
                tmp_file.unlink(missing_ok=True)
    except OSError as exc:
        raise os_error(exc, f"writing {path}", name_file=False) from exc  # the temp file's name would only confuse
    return path


def _write_clip(frames: np.ndarray, path: Path, fps: int, suffix: str) -> None:
    """mp4 through imageio-ffmpeg (H.264, yuv420p so every player opens it), gif through Pillow."""
    import imageio.v2 as imageio

    if suffix == ".mp4":
        try:
            # H.264 in yuv420p wants even sizes; macro_block_size=1 keeps the size exact when it is odd.
            # ffmpeg's own log would print several lines per failure; ours names the problem in one.
            with imageio.get_writer(
                path, format="FFMPEG", fps=fps, codec="libx264", quality=8, pixelformat="yuv420p", macro_block_size=1, ffmpeg_log_level="quiet"
            ) as writer:
                for frame in frames:
                    writer.append_data(frame)  # type: ignore[attr-defined]  # the FFMPEG plugin's writer has it; the stubs' base class does not
        except (OSError, RuntimeError, ValueError) as exc:  # ffmpeg died or its pipe broke (e.g. the disk filled)
            raise T2VError(
                f"the video encoder (ffmpeg) failed writing {path.name}: {_first_line(exc)}; check free disk space and run it again"
            ) from exc
    else:
        # Encoded in memory, written by us: Pillow's writer retries a failed flush from __del__ (a stray traceback).
        path.write_bytes(imageio.mimwrite("<bytes>", list(frames), format="GIF", duration=1000 / fps, loop=0))


def _check_clip(tmp: Path, count: int, final: Path) -> None:
    """Read the written clip back: ffmpeg reports a failed trailer (full disk) only in its log, not its exit code."""
    try:
        frames = read_video(tmp)
    except Exception as exc:  # any reader failure means the file is not a playable clip
        raise T2VError(
            f"{final} could not be written whole (the encoded file does not read back: {_first_line(exc)}); "
            "check free disk space and run it again; the previous file, if any, is unchanged"
        ) from exc
    if len(frames) != count:
        raise T2VError(
            f"{final} could not be written whole ({len(frames)} of {count} frames read back); "
            "check free disk space and run it again; the previous file, if any, is unchanged"
        )


def _first_line(exc: BaseException) -> str:
    """The first line of an exception's message."""
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def frame_name(path: Path, index: int) -> Path:
    """stem_000.png, stem_001.png, ... beside `path`."""
    return path.with_name(f"{path.stem}_{index:03d}.png")


def _write_pngs(frames: np.ndarray, path: Path) -> Path:
    """One png per frame, the whole sequence written aside first; old frames past the new count are removed."""
    import imageio.v2 as imageio

    for index in range(len(frames)):
        remove_stale(frame_name(path, index))  # per-frame temp files of an older, killed writer
    with temp_dir(path) as tmp:
        for index, frame in enumerate(frames):
            (tmp / frame_name(path, index).name).write_bytes(imageio.imwrite("<bytes>", frame, format="PNG"))
        # A glob of stem_*.png must never mix two videos: drop the old sequence's extra frames, then move ours in.
        for old in _sequence(path):
            if int(old.stem.rsplit("_", 1)[1]) >= len(frames):
                old.unlink()
        for index in range(len(frames)):
            written = tmp / frame_name(path, index).name
            os.chmod(written, 0o644)
            os.replace(written, frame_name(path, index))
    return frame_name(path, 0)


def _sequence(path: Path) -> list[Path]:
    """Existing frames stem_NNN.png of this output."""
    pattern = re.compile(re.escape(path.stem) + r"_\d{3,}\.png")
    return [p for p in path.parent.iterdir() if pattern.fullmatch(p.name)] if path.parent.is_dir() else []


def read_video(path: str | Path) -> np.ndarray:
    """Read a clip back as uint8 (F, H, W, 3): the writer checks with it that the whole clip landed."""
    import imageio.v2 as imageio

    return np.stack([np.asarray(f)[..., :3] for f in imageio.mimread(str(path), memtest=False)])
