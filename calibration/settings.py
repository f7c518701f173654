"""Calibration budgets (budgets.json): how many prompts, samples and videos each model's calibration uses."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from t2vtrt.runtime.errors import T2VError

BUDGETS_FILE = Path(__file__).with_name("budgets.json")


@dataclass(frozen=True)
class Budget:
    """One model's calibration sizes (see budgets.json's _doc)."""

    prompts: int | None
    samples: int
    eval_prompts: int | None
    eval_samples: int
    sweep_samples: int
    video_prompts: int
    video_seeds: tuple[int, ...]
    tool_samples: int
    num_bins: int
    num_quantized_bins: int
    seed: int
    stats_batch: int
    stats_tensors: int
    stats_mib: int | None = None  # and at most this many MiB of tensor values per run (None: no byte bound)
    tool_frames: int | None = None  # crop the tools' own (discarded) calibration feeds to this many frames
    prompts_file: str = "prompts.txt"  # in calibration/: the prompts captured for calibration
    eval_prompts_file: str = "prompts_eval.txt"  # in calibration/: held out, for the sweep and the gate
    adherence: bool = False  # the gate also judges prompt adherence and object position (the shapes world's evaluator)
    method: str = "mse"  # activation ranges: mse, entropy or max (calibration/ranges.py)

    def prompt_file(self, which: str) -> str:
        """The file of a prompt set: 'calibration' or 'eval'."""
        return self.prompts_file if which == "calibration" else self.eval_prompts_file

    def with_overrides(self, **changes: Any) -> "Budget":
        """A copy with the non-None `changes` applied."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def load_budget(model_name: str, path: Path = BUDGETS_FILE) -> Budget:
    """The 'default' budget overlaid with the model's own entry, checked."""
    data = json.loads(path.read_text())
    merged = {**data["default"], **data.get(model_name, {})}
    names = {f.name for f in fields(Budget)}
    unknown = sorted(set(merged) - names)
    if unknown:
        raise T2VError(f"{path} has unknown keys {unknown}; known are {sorted(names)}")
    merged["video_seeds"] = tuple(int(s) for s in merged["video_seeds"])
    budget = Budget(**merged)
    if budget.samples < 1 or budget.eval_samples < 1 or budget.num_quantized_bins >= budget.num_bins:
        raise T2VError(f"{path}: samples and eval_samples must be >= 1 and num_quantized_bins < num_bins")
    if budget.method not in ("mse", "entropy", "max"):
        raise T2VError(f"{path}: method for {model_name!r} is {budget.method!r}; use one of mse, entropy, max")
    if budget.stats_mib is not None and budget.stats_mib < 1:
        raise T2VError(f"{path}: stats_mib for {model_name!r} must be null or >= 1 (MiB of tensor values per range run)")
    if budget.tool_frames is not None and budget.tool_frames < 2:
        # One frame turns the temporal attention's MatMuls into GEMVs, which ModelOpt then leaves unquantized.
        raise T2VError(f"{path}: tool_frames for {model_name!r} must be null or >= 2")
    return budget
