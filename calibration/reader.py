"""Captured feeds as a CalibrationDataReader (what ModelOpt and onnxruntime.quantization consume)."""

from __future__ import annotations

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

Feeds = dict[str, np.ndarray]


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
