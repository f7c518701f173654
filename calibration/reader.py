"""Captured feeds as a CalibrationDataReader (what ModelOpt and onnxruntime.quantization consume)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from t2vtrt.runtime.backends import Feeds


def crop_frames(feeds: list[Feeds], frame_axes: dict[str, int], frames: int | None) -> list[Feeds]:
    """The first `frames` frames of every input that has a frames axis (`frame_axes`: input -> axis); None keeps all.

    For the tools' own calibration pass only, whose ranges ours replace: ModelOpt and quantize_static record
    every tensor of the graph at once, which at 16 frames of 32x32 latents exceeds 24 GiB.
    """
    if frames is None:
        return list(feeds)
    return [
        {
            name: np.take(value, np.arange(min(frames, value.shape[frame_axes[name]])), axis=frame_axes[name]) if name in frame_axes else value
            for name, value in feed.items()
        }
        for feed in feeds
    ]


def tool_feeds(data: str, samples: int, frame_axes: dict[str, int] | None, tool_frames: int | None) -> list[Feeds]:
    """The first `samples` captured calls in `data`, cropped for a tool's own calibration pass (see crop_frames)."""
    from t2vtrt.calibration.capture import Capture

    return crop_frames(Capture.load(Path(data)).feeds[:samples], frame_axes or {}, tool_frames)


class FeedReader(CalibrationDataReader):
    """Yields each captured denoiser call once; rewindable."""

    def __init__(self, feeds: list[Feeds]) -> None:
        self.feeds = list(feeds)
        self.index = 0

    def get_next(self) -> Feeds | None:
        """The next feed dict, or None at the end."""
        if self.index >= len(self.feeds):
            return None
        self.index += 1
        return self.feeds[self.index - 1]

    def get_first(self) -> Feeds:
        """The first feed dict without advancing (ModelOpt probes shapes with it)."""
        return self.feeds[0]

    def rewind(self) -> None:
        """Start over."""
        self.index = 0

    def __len__(self) -> int:
        return len(self.feeds)
