"""Which denoiser variant runs at each sampler step: a quantized variant with float steps where it errs most.

A denoiser variant may carry a `schedule` in the manifest: the sampler steps whose timestep lies above
`above` (the high-noise start, where an error moves the whole video) or below `below` (the clean end)
run the `fallback` variant instead. Timesteps, not step indices, so one schedule holds for any step count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from t2vtrt.runtime.errors import T2VError


@dataclass(frozen=True)
class StepSchedule:
    """Run `fallback` at timesteps t > above or t < below; the variant itself elsewhere."""

    fallback: str
    above: float | None = None
    below: float | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any] | None, source: str = "manifest") -> "StepSchedule | None":
        """A schedule from its manifest entry (None when there is none); one-line errors for a malformed one."""
        if data is None:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("fallback"), str) or not data["fallback"]:
            raise T2VError(f"{source}: a step schedule needs a 'fallback' precision, got {data!r}; rebuild with `t2vtrt engines`")
        bounds = {}
        for key in ("above", "below"):
            value = data.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)):
                raise T2VError(f"{source}: step schedule '{key}' must be a finite timestep or null, got {value!r}")
            bounds[key] = None if value is None else float(value)
        return cls(data["fallback"], **bounds)

    def to_json(self) -> dict[str, Any]:
        """The manifest entry."""
        return {"fallback": self.fallback, "above": self.above, "below": self.below}

    def uses_fallback(self, timestep: float) -> bool:
        """True when the step at `timestep` runs the fallback variant."""
        return (self.above is not None and timestep > self.above) or (self.below is not None and timestep < self.below)

    def fallback_steps(self, timesteps: Any) -> list[int]:
        """Indices of the steps (of a sampler's timesteps) that run the fallback variant."""
        return [i for i, t in enumerate(timesteps) if self.uses_fallback(float(t))]


def first_steps_schedule(fallback: str, timesteps: Any, count: int) -> StepSchedule | None:
    """The schedule that runs the first `count` of these (descending) timesteps in `fallback`; None for 0."""
    values = [float(t) for t in timesteps]
    if count <= 0:
        return None
    if count >= len(values):
        return StepSchedule(fallback, above=min(values) - 1.0)
    # Midway between the last float step and the first quantized one: robust to float rounding.
    return StepSchedule(fallback, above=(values[count - 1] + values[count]) / 2.0)


def sampler_timesteps(manifest: Any, steps: int | None = None, sampler: str | None = None) -> list[float]:
    """The timesteps the manifest's (or the named) sampler visits in `steps` steps (default: the manifest's)."""
    from t2vtrt.runtime.schedulers import make_scheduler

    info = manifest.data["scheduler"]
    scheduler = make_scheduler(sampler or info["default_sampler"], info["config"], info["prediction_type"])
    scheduler.set_timesteps(int(steps or manifest.data["defaults"]["steps"]))
    return [float(t) for t in scheduler.timesteps]
