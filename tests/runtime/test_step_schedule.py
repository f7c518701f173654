"""The denoiser's per-step variant schedule: parsing, which steps fall back, and the runtime loop honouring it."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from t2vtrt.runtime.errors import T2VError
from t2vtrt.runtime.manifest import load_manifest
from t2vtrt.runtime.step_schedule import StepSchedule, first_steps_schedule, sampler_timesteps

DDIM_15 = [925.0, 859.0, 793.0, 727.0, 661.0, 595.0, 529.0, 463.0, 397.0, 331.0, 265.0, 199.0, 133.0, 67.0, 1.0]


@pytest.mark.parametrize("count, expected", [(0, []), (1, [0]), (3, [0, 1, 2]), (14, list(range(14))), (15, list(range(15)))])
def test_first_steps_schedule_covers_exactly_the_first_steps(count: int, expected: list[int]) -> None:
    """k float steps: exactly indices 0..k-1 fall back, whatever the spacing of the timesteps."""
    schedule = first_steps_schedule("fp32", DDIM_15, count)
    assert (schedule.fallback_steps(DDIM_15) if schedule else []) == expected


def test_schedule_is_by_timestep_so_it_holds_for_other_step_counts() -> None:
    """A schedule chosen at 15 steps keeps the same noise band float at 30 steps: t > 892 only."""
    schedule = first_steps_schedule("fp32", DDIM_15, 1)
    assert schedule is not None and schedule.above == pytest.approx(892.0)
    thirty = [float(t) for t in np.linspace(967, 1, 30).round()]
    assert schedule.fallback_steps(thirty) == [i for i, t in enumerate(thirty) if t > 892.0] == [0, 1, 2]


def test_below_sends_the_clean_end_to_the_fallback() -> None:
    """`below` covers the last (low-noise) steps."""
    assert StepSchedule("fp32", below=100.0).fallback_steps(DDIM_15) == [13, 14]


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"above": 5.0}, "needs a 'fallback' precision"),
        ({"fallback": ""}, "needs a 'fallback' precision"),
        ({"fallback": "fp32", "above": "high"}, "'above' must be a finite timestep"),
        ({"fallback": "fp32", "below": math.nan}, "'below' must be a finite timestep"),
        ({"fallback": "fp32", "above": True}, "'above' must be a finite timestep"),
    ],
)
def test_malformed_schedules_are_one_line_errors(entry: dict, message: str) -> None:
    """A hand-edited manifest schedule that makes no sense is refused, naming the key."""
    with pytest.raises(T2VError, match=message):
        StepSchedule.from_json(entry)


def test_round_trip() -> None:
    """to_json / from_json keep every field."""
    schedule = StepSchedule("fp16", above=800.5, below=20.0)
    assert StepSchedule.from_json(schedule.to_json()) == schedule


def _with_int8(engines: Path, tmp_path: Path, schedule: dict | None) -> Path:
    """A copy of a cpu target whose denoiser has an `int8` variant (the fp32 file under another name) with `schedule`."""
    dst = tmp_path / "cpu"
    shutil.copytree(engines, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    variants = manifest["components"]["denoiser"]["variants"]
    variants["int8"] = {**variants["fp32"], "precision": "int8", **({"schedule": schedule} if schedule else {})}
    (dst / "manifest.json").write_text(json.dumps(manifest))
    return dst


class _Counting:
    """Counts the calls that reach a session, by timestep."""

    def __init__(self, inner) -> None:  # type: ignore[no-untyped-def]
        self.inner, self.timesteps = inner, []

    def run(self, feeds):  # type: ignore[no-untyped-def]
        self.timesteps.append(float(feeds["timestep"][0]))
        return self.inner.run(feeds)

    def close(self) -> None:
        self.inner.close()


def test_pipeline_runs_each_step_on_the_scheduled_variant(tiny_engines: Path, tmp_path: Path) -> None:
    """With a manifest schedule, the steps above the bound run the fallback session and the rest the variant's."""
    from t2vtrt.runtime.pipeline import Pipeline

    manifest = load_manifest(tiny_engines)
    steps = sampler_timesteps(manifest, 6)
    schedule = first_steps_schedule("fp32", steps, 2)
    assert schedule is not None
    target = _with_int8(tiny_engines, tmp_path, schedule.to_json())
    pipe = Pipeline.from_dir(target, precision="int8")
    assert pipe.schedule == schedule
    quantized, fallback = _Counting(pipe.sessions["denoiser"]), _Counting(pipe.sessions["denoiser@fp32"])
    pipe.sessions["denoiser"], pipe.sessions["denoiser@fp32"] = quantized, fallback
    pipe("a red balloon", steps=6, seed=0)
    assert fallback.timesteps == steps[:2] and quantized.timesteps == steps[2:]


def test_schedule_false_and_a_missing_fallback(tiny_engines: Path, tmp_path: Path) -> None:
    """schedule=False ignores the manifest's; a fallback precision that was not built is a one-line error."""
    from t2vtrt.runtime.pipeline import Pipeline

    target = _with_int8(tiny_engines, tmp_path, {"fallback": "fp32", "above": 500.0})
    assert Pipeline.from_dir(target, precision="int8", schedule=False).schedule is None
    with pytest.raises(T2VError, match="fallback precision 'fp16' was not built"):
        Pipeline.from_dir(target, precision="int8", schedule=StepSchedule("fp16", above=500.0))
