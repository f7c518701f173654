"""Write frames (F, H, W, 3) uint8 as mp4, gif or a folder of png frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from t2vtrt.runtime.errors import T2VError
from t2vtrt.runtime.files import atomic_path

FORMATS = (".mp4", ".gif", ".png")


def write_video(frames: np.ndarray, path: str | Path, fps: int = 8) -> Path:
    """Write a clip atomically; .png writes path_stem_000.png ... beside it."""
    path = Path(path)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise T2VError(f"frames must be uint8 (F, H, W, 3), got {frames.dtype} {frames.shape}")
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise T2VError(f"cannot write {path}: the output must end in {', '.join(FORMATS)}")
    if suffix == ".png":
        return _write_pngs(frames, path)
    with atomic_path(path) as tmp:
        tmp_file = tmp.with_suffix(suffix)  # imageio picks the writer from the suffix
        try:
            _write_clip(frames, tmp_file, fps, suffix)
            tmp_file.replace(tmp)
        finally:
            tmp_file.unlink(missing_ok=True)
    return path


def _write_clip(frames: np.ndarray, path: Path, fps: int, suffix: str) -> None:
    """mp4 through imageio-ffmpeg (H.264, yuv420p so every player opens it), gif through Pillow."""
    import imageio.v2 as imageio

    if suffix == ".mp4":
        # H.264 in yuv420p wants even sizes; macro_block_size=1 keeps the size exact when it is odd.
        with imageio.get_writer(path, format="FFMPEG", fps=fps, codec="libx264", quality=8,
                                pixelformat="yuv420p", macro_block_size=1) as writer:
            for frame in frames:
                writer.append_data(frame)
    else:
        imageio.mimsave(path, list(frames), format="GIF", duration=1000 / fps, loop=0)


def _write_pngs(frames: np.ndarray, path: Path) -> Path:
    """One png per frame: stem_000.png, stem_001.png, ..."""
    import imageio.v2 as imageio

    for index, frame in enumerate(frames):
        target = path.with_name(f"{path.stem}_{index:03d}.png")
        with atomic_path(target) as tmp:
            imageio.imwrite(tmp, frame, format="PNG")
    return path.with_name(f"{path.stem}_000.png")


def read_video(path: str | Path) -> np.ndarray:
    """Read a clip back as uint8 (F, H, W, 3): tests and compare use it."""
    import imageio.v2 as imageio

    return np.stack([np.asarray(f)[..., :3] for f in imageio.mimread(str(path), memtest=False)])
