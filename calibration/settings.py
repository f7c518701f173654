"""Calibration budgets (budgets.json): how many prompts, samples and videos each model's calibration uses."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from t2vtrt.runtime.errors import T2VError

BUDGETS_FILE = Path(__file__).with_name("budgets.json")
GENERATION = ("steps", "frames", "height", "width")
Generation = dict[str, "int | str"]  # Budget.generation(): steps / frames / height / width -> a value or "min"


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
    num_bins: int
    num_quantized_bins: int
    seed: int
    stats_batch: int
    hist_values: int | None = None  # per tensor and run, at most about this many values go into its histogram (None: all)
    tool_frames: int | None = None  # the shapes the placement's GEMV check and the INT8 graph's FP16 conversion see: frames
    tool_latent: int | None = None  # and latent height and width (None: as captured)
    prompts_file: str = "prompts.txt"  # in calibration/: the prompts captured for calibration
    eval_prompts_file: str = "prompts_eval.txt"  # in calibration/: held out, for the sweep and the gate
    adherence: bool = False  # the gate also judges prompt adherence and object position (the shapes world's evaluator)
    method: str = "mse"  # activation ranges: mse, entropy or max (calibration/ranges.py)
    # What the capture and the gate's videos generate (None: the manifest's default; "min": the profile's minimum).
    steps: int | None = None
    frames: int | str | None = None
    height: int | str | None = None
    width: int | str | None = None

    def prompt_file(self, which: str) -> str:
        """The file of a prompt set: 'calibration' or 'eval'."""
        return self.prompts_file if which == "calibration" else self.eval_prompts_file

    def generation(self) -> Generation:
        """The generation settings this budget sets instead of the manifest's defaults."""
        return {k: v for k in GENERATION if (v := getattr(self, k)) is not None}

    def with_overrides(self, **changes: Any) -> "Budget":
        """A copy with the non-None `changes` applied."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def budget_names(path: Path = BUDGETS_FILE) -> list[str]:
    """The entries of budgets.json a budget can be named by."""
    return sorted(k for k, v in json.loads(path.read_text()).items() if isinstance(v, dict) and not k.startswith("_"))


def load_named_budget(name: str, path: Path = BUDGETS_FILE) -> Budget:
    """Entry `name` over 'default'; a one-line error naming the entries when there is none."""
    if name not in budget_names(path):
        raise T2VError(f"no calibration budget {name!r} in {path}: choose one of {', '.join(budget_names(path))}")
    return load_budget(name, path=path)


def budget_from_json(data: dict[str, Any]) -> Budget:
    """A Budget from its asdict() form (as a precision plan records it)."""
    names = {f.name for f in fields(Budget)}
    try:
        return Budget(**{**{k: v for k, v in data.items() if k in names}, "video_seeds": tuple(data["video_seeds"])})
    except (KeyError, TypeError) as exc:
        raise T2VError(f"the precision plan's budget record is incomplete ({exc}): re-run `t2vtrt calibrate`") from exc


def load_budget(model_name: str, denoiser_bytes: int = 0, path: Path = BUDGETS_FILE) -> Budget:
    """The 'default' budget overlaid with the size tiers the denoiser reaches, then with the model's own entry."""
    data = json.loads(path.read_text())
    merged = dict(data["default"])
    for tier in sorted(data.get("size_tiers", []), key=lambda t: t["from_denoiser_mib"]):
        if denoiser_bytes >= tier["from_denoiser_mib"] << 20:
            merged.update(data[tier["budget"]])
    merged.update(data.get(model_name, {}))
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
    if budget.hist_values is not None and budget.hist_values < budget.num_bins:
        raise T2VError(f"{path}: hist_values for {model_name!r} must be null or >= num_bins ({budget.num_bins})")
    if budget.tool_latent is not None and budget.tool_latent < 8:
        raise T2VError(f"{path}: tool_latent for {model_name!r} must be null or >= 8 (latent rows and columns the tools see)")
    if budget.tool_frames is not None and budget.tool_frames < 2:
        # One frame turns the temporal attention's MatMuls into GEMVs, which ModelOpt's rules then leave unquantized.
        raise T2VError(f"{path}: tool_frames for {model_name!r} must be null or >= 2")
    for key in GENERATION:
        value = getattr(budget, key)
        if value is not None and not (value == "min" and key != "steps") and not (isinstance(value, int) and value >= 1):
            minimum = "" if key == "steps" else ', "min" (the profile\'s minimum)'
            raise T2VError(f"{path}: {key} for {model_name!r} is {value!r}; use null (the manifest's default){minimum} or an integer >= 1")
    return budget
