"""Where a quantized denoiser's error comes from, measured on the final video: per sampler step, per CFG branch.

The FP32 pipeline runs every held-out case; a `MixedDenoiser` stands in for its denoiser session and answers
chosen calls (steps, and optionally one guidance branch) with the quantized graph instead. Each mix is judged
the way the gate judges: the videos against the FP32 videos (PSNR per frame, SSIM, and for models whose eval
set is the shapes world, the object's position and color error).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from t2vtrt.runtime.backends import Feeds


class MixedDenoiser:
    """A denoiser session answering the kept calls from `quantized`, the rest from `reference`.

    `steps`: the call indices (sampler steps) answered by the quantized graph (None: all of them).
    `branch`: 0 (unconditional) or 1 (conditional) answers only that half of the CFG batch from the quantized
    graph (both graphs run; for measurement only); None: the whole call.
    """

    def __init__(self, reference: Any, quantized: Any, steps: set[int] | None = None, branch: int | None = None) -> None:
        self.reference, self.quantized, self.steps, self.branch = reference, quantized, steps, branch
        self.calls = 0

    def reset(self) -> None:
        """Start a new video: call indices count from 0 again."""
        self.calls = 0

    def run(self, feeds: Feeds) -> dict[str, np.ndarray]:
        """One denoiser call."""
        index, self.calls = self.calls, self.calls + 1
        if self.steps is not None and index not in self.steps:
            return self.reference.run(feeds)
        if self.branch is None:
            return self.quantized.run(feeds)
        ref, quant = self.reference.run(feeds), self.quantized.run(feeds)
        mixed = {}
        for name, value in ref.items():
            halves = np.split(value, 2)
            halves[self.branch] = np.split(quant[name], 2)[self.branch]
            mixed[name] = np.concatenate(halves)
        return mixed

    def close(self) -> None:
        """The wrapped sessions belong to their owner."""


@dataclass
class Case:
    """One held-out prompt and seed."""

    prompt: str
    seed: int


def video_metrics(videos: list[np.ndarray], cases: list[Case], references: list[np.ndarray], semantic: bool) -> dict[str, Any]:
    """The gate's video metrics (calibration/gate.py) of one mix, under the attribution table's names."""
    from t2vtrt.calibration.gate import VideoCase
    from t2vtrt.calibration.gate import video_metrics as gate_metrics

    m = gate_metrics(videos, [VideoCase(c.prompt, c.seed, r) for c, r in zip(cases, references)], semantic)
    out: dict[str, Any] = {
        "psnr_min": m["psnr_db_min"],
        "psnr_mean": m["psnr_db_mean"],
        "ssim_min": m["ssim_min"],
        "psnr_min_per_video": [min(frames) for frames in m["psnr_db_per_frame"]],
    }
    if semantic:
        out.update({"position_px_max": m["position_px_max"], "color_max": m["color_error_max"], "adherence_drop": m["adherence_drop"]})
    return out


def generate_all(pipe: Any, cases: list[Case], mixer: MixedDenoiser | None = None) -> list[np.ndarray]:
    """The video of every case through `pipe`, with `mixer` as its denoiser when given."""
    inner = pipe.sessions["denoiser"]
    videos = []
    try:
        if mixer is not None:
            pipe.sessions["denoiser"] = mixer  # observe the one loop rather than writing another
        for case in cases:
            if mixer is not None:
                mixer.reset()
            videos.append(pipe(case.prompt, seed=case.seed))
    finally:
        pipe.sessions["denoiser"] = inner
    return videos


def attribution(
    pipe: Any, quantized: Any, cases: list[Case], steps: int, semantic: bool, on_row: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """The error of the quantized denoiser per step, per first-k-float schedule and per CFG branch, on the videos."""
    reference_session = pipe.sessions["denoiser"]
    references = generate_all(pipe, cases)
    rows: dict[str, list[dict[str, Any]]] = {"only_step": [], "first_float": [], "branch": []}

    def measure(kind: str, label: dict[str, Any], mixer: MixedDenoiser) -> None:
        rows[kind].append({**label, **video_metrics(generate_all(pipe, cases, mixer), cases, references, semantic)})
        if on_row:
            on_row(f"{kind} {label}")

    measure("first_float", {"float_steps": 0}, MixedDenoiser(reference_session, quantized))
    for step in range(steps):
        measure("only_step", {"step": step}, MixedDenoiser(reference_session, quantized, {step}))
    for k in range(1, steps):
        measure("first_float", {"float_steps": k}, MixedDenoiser(reference_session, quantized, set(range(k, steps))))
    for branch, name in ((0, "unconditional"), (1, "conditional")):
        measure("branch", {"branch": name}, MixedDenoiser(reference_session, quantized, None, branch))
    return rows


def markdown(rows: dict[str, Any], title: str) -> str:
    """The attribution table: one row per mix, the worst/mean frame PSNR, worst SSIM and object errors."""

    def cell(value: Any, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    lines = [
        f"# {title}",
        "",
        "| mix | PSNR min dB | PSNR mean dB | SSIM min | object position error px (max) | color error (max) |",
        "|---|---|---|---|---|---|",
    ]
    timesteps = rows["timesteps"]
    for kind in ("only_step", "first_float", "branch"):
        for row in rows[kind]:
            label = {
                "only_step": lambda r: f"only step {r['step']} (t={timesteps[r['step']]:.0f}) quantized",
                "first_float": lambda r: f"first {r['float_steps']} steps FP32, the rest quantized",
                "branch": lambda r: f"only the {r['branch']} branch quantized",
            }[kind](row)
            lines.append(
                f"| {label} | {row['psnr_min']:.2f} | {row['psnr_mean']:.2f} | {row['ssim_min']:.3f} | "
                f"{cell(row.get('position_px_max'), '.2f')} | {cell(row.get('color_max'), '.1f')} |"
            )
    return "\n".join(lines) + "\n"


def run_attribution(paths: Any, variant: str, prompt_count: int | None = None, on_row: Callable[[str], None] | None = None) -> str:
    """Attribution of one quantized graph on the gate's held-out cases -> reports/int8_attribution.{json,md}."""
    from t2vtrt.calibration.paths import CalibPaths
    from t2vtrt.calibration.prompts import load_prompts
    from t2vtrt.calibration.reference import onnx_pipeline
    from t2vtrt.calibration.stage import model_budget
    from t2vtrt.runtime.files import atomic_path, write_json
    from t2vtrt.runtime.step_schedule import sampler_timesteps

    cp = CalibPaths(paths)
    graph = {"u8s8": cp.u8s8_graph, "int8-qdq": cp.cpuverify_graph}[variant]
    budget = model_budget(paths)
    prompts = load_prompts("eval", prompt_count or budget.video_prompts, budget.prompt_file("eval"))
    cases = [Case(p, s) for p in prompts for s in budget.video_seeds]
    pipe = onnx_pipeline(paths, generation=budget.generation())
    quantized = onnx_pipeline(paths, graph, "int8", budget.generation())
    timesteps = sampler_timesteps(pipe.manifest)
    try:
        rows = attribution(pipe, quantized.sessions["denoiser"], cases, len(timesteps), budget.adherence, on_row)
    finally:
        pipe.close()
        quantized.close()
    rows.update({"timesteps": timesteps, "variant": variant, "graph": graph.name, "cases": [c.__dict__ for c in cases]})
    out = paths.reports_dir / "int8_attribution.json"
    write_json(out, rows)
    text = markdown(rows, f"Where {graph.name}'s error comes from ({len(cases)} held-out videos vs FP32)")
    with atomic_path(out.with_suffix(".md")) as tmp:
        Path(tmp).write_text(text)
    return f"{out} and {out.with_suffix('.md')}"
