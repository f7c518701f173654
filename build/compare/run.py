"""One compare's result: its checks, the videos behind the plots, and the report record (stage, report and plots share it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from t2vtrt.build.compare import gates
from t2vtrt.build.compare.gates import Check


@dataclass
class CompareRun:
    """Everything one compare produced: the checks, the videos (for the plots) and the report record."""

    checks: list[Check] = field(default_factory=list)
    reference_videos: dict[str, np.ndarray] = field(default_factory=dict)
    videos: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # precision -> case -> frames
    diffusers_videos: dict[str, np.ndarray] = field(default_factory=dict)  # case -> frames of the family's diffusers reference
    report: dict[str, Any] = field(default_factory=dict)
    reports_dir: Path | None = None  # where accuracy.{json,md} and the PNGs were written

    target: str = ""  # the compared target's name, for messages

    @property
    def compared(self) -> bool:
        """True when at least one of the target's variants was actually run and gated (graph or video)."""
        return any(c.kind in ("graph", "video") and c.status != gates.SKIPPED for c in self.checks)

    @property
    def passed(self) -> bool:
        """True when something was compared and no check failed (skipped checks neither pass nor fail)."""
        return self.compared and not any(c.status == gates.FAILED for c in self.checks)

    @property
    def status(self) -> str:
        """passed, failed, or `nothing compared` (every variant skipped: a failure for CI, never a pass)."""
        if not self.compared:
            return "nothing compared"
        return "passed" if self.passed else "failed"

    @property
    def failures(self) -> list[str]:
        """Every failure line, in check order; one more when nothing was compared at all."""
        lines = [line for c in self.checks for line in c.failures]
        if not self.compared:
            reasons = sorted({c.reason for c in self.checks if c.status == gates.SKIPPED and c.kind in ("graph", "video")})
            lines.append(
                f"nothing compared: every variant of target {self.target or '?'} was skipped "
                f"({'; '.join(reasons) or 'no variants'}); run compare on a machine that runs this target "
                "(tensorrt targets: a GPU with TensorRT installed)"
            )
        return lines
