"""Captured feeds as a CalibrationDataReader (what onnxruntime.quantization consumes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from t2vtrt.runtime.backends import Feeds


Crops = dict[str, dict[int, int]]  # input name -> {axis: the leading size kept}


def crop_feeds(feeds: list[Feeds], crops: Crops) -> list[Feeds]:
    """Every input cropped to the leading `size` entries of each axis `crops` names for it (others untouched).

    For the tools' own calibration pass only, whose ranges ours replace: quantize_static records
    every tensor of the graph at once, which at 16 frames of 32x32 latents exceeds 24 GiB.
    """
    out = []
    for feed in feeds:
        cropped = dict(feed)
        for name, axes in crops.items():
            for axis, size in axes.items():
                cropped[name] = np.take(cropped[name], np.arange(min(size, cropped[name].shape[axis])), axis=axis)
        out.append(cropped)
    return out


def tool_feeds(data: str, samples: int, crops: Crops | None) -> list[Feeds]:
    """The first `samples` captured calls in `data`, cropped for a tool's own calibration pass (see crop_feeds)."""
    from t2vtrt.calibration.capture import Capture

    return crop_feeds(Capture.load(Path(data)).feeds[:samples], crops or {})


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
        """The first feed dict without advancing (a tool may probe shapes with it)."""
        return self.feeds[0]

    def rewind(self) -> None:
        """Start over."""
        self.index = 0

    def __len__(self) -> int:
        return len(self.feeds)
