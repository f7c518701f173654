"""The VRAM plan of a wan model from its configs alone (no weights, no export): `t2vtrt engines --model DIR --gpu G --dry-run`
on a Wan2.2 directory whose transformer/ holds only config.json.

Per component: parameters from the real classes on the meta device, weight bytes per precision, the activation
peak and I/O at 480p and 720p (build/wan_realsize.py). Then the load/unload schedule that fits the GPU, in the
plan.py sense: everything resident when it fits, else the runtime's --low-vram (one stage's engines at a time:
text encoder, unload, denoiser, unload, VAE decoder), each stage at the best precision that fits:
- text encoder (UMT5-XXL, 11.4 GB in 16-bit): BF16 on the GPU (T5 overflows FP16), else on the CPU (ONNX Runtime,
  fp32; it runs once per prompt, outside the sampler loop), naming the weight-only INT8 size that would fit;
- denoiser: FP16, else INT8 (the calibrate + quantize stages);
- VAE decoder: both streaming graphs (first chunk, next chunks) open together while the video decodes, FP16,
  their causal caches fp32 graph I/O as the manifest declares them.
A stage that fits nowhere makes the plan refuse, naming what would fit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from t2vtrt.build.engines.plan import GIB, MIB, MIN_WORKSPACE
from t2vtrt.build.gpus.profiles import GpuProfile
from t2vtrt.build.wan_realsize import Peak, WeightCount
from t2vtrt.runtime.errors import T2VError

PLAN_VERSION = 1
VAE_ENGINES = 2  # vae_decoder + vae_decoder_next, both held while the video decodes (runtime/pipeline.py)


@dataclass(frozen=True)
class Stage:
    """One component as the plan runs it."""

    component: str
    placement: str  # gpu | cpu
    precision: str
    weights: int  # bytes on the device (all its engines)
    activations: int
    io: int

    @property
    def need(self) -> int:
        """Device bytes while this stage runs (0 for a stage on the CPU)."""
        return 0 if self.placement == "cpu" else self.weights + self.activations + self.io

    def to_json(self) -> dict[str, Any]:
        """The plan's record."""
        return {**self.__dict__, "need": self.need}


@dataclass
class ConfigPlan:
    """One GPU at one resolution: the stages, the mode, whether it fits and what would otherwise."""

    gpu: GpuProfile
    label: str
    resolution: tuple[int, int, int]
    counts: dict[str, WeightCount]
    peaks: dict[str, Peak]
    stages: list[Stage]
    mode: str  # resident | low_vram
    notes: list[str] = field(default_factory=list)
    alternatives: list[str] = field(default_factory=list)

    @property
    def budget(self) -> int:
        """VRAM less the profile's reserve."""
        return int((self.gpu.vram_gb - self.gpu.reserve_gb) * GIB)

    @property
    def required(self) -> int:
        """Device bytes the chosen mode needs at its peak (reserve excluded)."""
        needs = [s.need for s in self.stages]
        return sum(needs) if self.mode == "resident" else max(needs)

    @property
    def fits(self) -> bool:
        """True when the chosen mode fits the budget."""
        return self.required <= self.budget

    @property
    def workspace(self) -> int:
        """The builder's scratch: the profile's workspace, capped at what is left beside the largest stage (plan.py's rule)."""
        wanted = self.gpu.memory_pool_limits.get("workspace_mib", 4096) * MIB
        return max(MIN_WORKSPACE, min(wanted, self.budget - max(s.need for s in self.stages)))

    @property
    def build(self) -> int:
        """Device bytes to build the largest engine: its weights and activations plus the workspace."""
        gpu = [s for s in self.stages if s.placement == "gpu"]
        largest = max((s.weights // (VAE_ENGINES if s.component == "vae_decoder" else 1) + s.activations for s in gpu), default=0)
        return largest + self.workspace

    def to_json(self) -> dict[str, Any]:
        """plan.json's entry for this resolution."""
        h, w, f = self.resolution
        return {
            "resolution": {"height": h, "width": w, "frames": f},
            "mode": self.mode,
            "budget_bytes": self.budget,
            "required_bytes": self.required,
            "fits": self.fits,
            "build_bytes": self.build,
            "workspace_bytes": self.workspace,
            "components": {
                c: {
                    "parameters": n.parameters,
                    "gemm_parameters": n.gemm,
                    "weights_bytes": {p: n.bytes_at(p) for p in ("fp32", "fp16", "bf16", "int8")},
                    "activation_bytes_fp32": self.peaks[c].activation_bytes,
                    "activation_bytes_fp32_unfused": self.peaks[c].unfused_bytes,
                    "io_bytes": self.peaks[c].io_bytes,
                    "unknown_shapes": self.peaks[c].unknown_shapes,
                }
                for c, n in self.counts.items()
            },
            "stages": [s.to_json() for s in self.stages],
            "notes": self.notes,
            "alternatives": self.alternatives,
        }

    def table(self) -> list[str]:
        """The dry run's lines: per component weights per precision, activations, I/O, where it runs; then the schedule."""
        h, w, f = self.resolution
        lines = [
            f"{self.gpu.name} ({self.gpu.vram_gb:g} GiB, reserve {self.gpu.reserve_gb:g}: budget {_gib(self.budget)}) at {self.label} {h}x{w}x{f}",
            f"  {'component':<13}{'params':>9}{'fp32':>11}{'fp16/bf16':>11}{'int8':>11}{'activations':>13}{'io':>11}   runs",
        ]
        for stage in self.stages:
            n, c = self.counts[stage.component], stage.component
            where = f"{stage.placement} {stage.precision}" + (f": {_gib(stage.need)}" if stage.placement == "gpu" else "")
            lines.append(
                f"  {c:<13}{n.parameters / 1e9:>8.2f}B{_gib(n.bytes_at('fp32')):>11}{_gib(n.bytes_at('fp16')):>11}{_gib(n.bytes_at('int8')):>11}"
                f"{_gib(stage.activations):>13}{_gib(stage.io):>11}   {where}"
            )
        order = " -> unload -> ".join(f"{s.component} {s.precision}" + (" (cpu)" if s.placement == "cpu" else "") for s in self.stages)
        verdict = "fits" if self.fits else "DOES NOT FIT"
        how = "resident (all engines loaded)" if self.mode == "resident" else f"--low-vram: {order}"
        lines.append(f"  plan: {how}; peak {_gib(self.required)} of {_gib(self.budget)}: {verdict}")
        unknown = sum(p.unknown_shapes for p in self.peaks.values())
        lines.append(
            f"  build: largest engine + {_gib(self.workspace)} workspace needs {_gib(self.build)}; "
            f"shapes unknown after inference in the probe graphs: {unknown}"
        )
        lines += [f"  would fit: {a}" for a in self.alternatives]
        lines += [f"  note: {n}" for n in self.notes]
        return lines


def _gib(n: int) -> str:
    """Bytes as GiB text (MiB under 1 GiB)."""
    return f"{n / GIB:.2f} GiB" if n >= GIB else f"{n / MIB:.0f} MiB"


def _stage(component: str, placement: str, precision: str, count: WeightCount, peak: Peak) -> Stage:
    """A component at one placement and precision."""
    engines = VAE_ENGINES if component == "vae_decoder" else 1
    activations, io = peak.at(precision)
    if placement == "cpu":
        return Stage(component, placement, precision, count.bytes_at(precision), peak.activation_bytes, io)
    return Stage(component, placement, precision, engines * count.bytes_at(precision), activations, io)


def candidates(component: str, profile: GpuProfile, count: WeightCount, peak: Peak) -> list[Stage]:
    """The ways to run a component on this GPU, best first."""
    sixteen = "bf16" if "bf16" in profile.precisions else "fp16"
    if component == "text_encoder":  # T5-family encoders overflow FP16 (precision.py's ALWAYS_BF16 reason)
        return [_stage(component, "gpu", sixteen, count, peak), _stage(component, "cpu", "fp32", count, peak)]
    if component == "denoiser":
        return [_stage(component, "gpu", "fp16", count, peak)] + (
            [_stage(component, "gpu", "int8", count, peak)] if "int8" in profile.precisions else []
        )
    return [_stage(component, "gpu", "fp16", count, peak)]


def plan_resolution(
    profile: GpuProfile, label: str, resolution: tuple[int, int, int], counts: dict[str, WeightCount], peaks: dict[str, Peak], low_vram: bool
) -> ConfigPlan:
    """Resident at the best precisions when that fits (and --low-vram is not asked), else one stage at a time."""
    from t2vtrt.build.wan_realsize import COMPONENTS

    order = [c for c in COMPONENTS if c in counts]  # run order: text encoder, denoiser, VAE decoder
    options = {c: candidates(c, profile, counts[c], peaks[c]) for c in order}
    best = [options[c][0] for c in order]
    plan = ConfigPlan(profile, label, resolution, counts, peaks, best, "resident")
    if low_vram or not plan.fits:
        chosen = [next((s for s in options[c] if s.need <= plan.budget), options[c][-1]) for c in order]
        plan = ConfigPlan(profile, label, resolution, counts, peaks, chosen, "low_vram")
    plan.notes, plan.alternatives = _notes(plan), _alternatives(plan, options)
    return plan


def _notes(plan: ConfigPlan) -> list[str]:
    """What the chosen stages mean for the build and the run."""
    notes = []
    for stage in plan.stages:
        if stage.component == "text_encoder" and stage.placement == "cpu":
            notes.append(
                f"UMT5 ({_gib(plan.counts['text_encoder'].bytes_at('bf16'))} in BF16) does not fit this GPU even alone: it runs on the CPU "
                f"(ONNX Runtime, fp32: {_gib(stage.weights)} of host RAM), once per prompt before the sampler loop"
            )
        if stage.component == "text_encoder" and stage.placement == "gpu" and plan.mode == "low_vram":
            notes.append(f"UMT5 runs first in {stage.precision.upper()} ({_gib(stage.need)}) and is unloaded before the denoiser loads")
        if stage.component == "denoiser" and stage.precision == "int8":
            notes.append("the denoiser runs INT8: run `t2vtrt calibrate` and `t2vtrt quantize` on the real weights first")
    if plan.mode == "low_vram":
        notes.append("generate with --low-vram (the runtime loads and frees each stage's engines)")
    notes.append(
        f"vae_decoder: weights columns are per engine; its {VAE_ENGINES} streaming engines (first chunk, next chunks) are open "
        "together, each with its weights and context memory; its io is one chunk's causal caches in and out at fp32 (the manifest's dtype)"
    )
    notes.append(
        "activations: peak live tensors at 16 bits, attention and pointwise chains fused as TensorRT does "
        "(every tensor materialised, the upper bound, is in plan.json)"
    )
    return notes


def _alternatives(plan: ConfigPlan, options: dict[str, list[Stage]]) -> list[str]:
    """What would fit where a stage does not (or where UMT5 left the GPU)."""
    out = []
    for stage in plan.stages:
        if stage.component == "text_encoder" and stage.placement == "cpu":
            int8 = _stage("text_encoder", "gpu", "int8", plan.counts["text_encoder"], plan.peaks["text_encoder"])
            if int8.need <= plan.budget:
                out.append(f"UMT5 on this GPU with weight-only INT8 ({_gib(int8.need)}; not built by t2v-trt yet)")
        if stage.need <= plan.budget:
            continue
        if stage.component == "vae_decoder":
            first = plan.peaks["vae_decoder"].second_context_bytes // (1 if stage.precision == "fp32" else 2)  # its context goes too
            half = Stage(stage.component, "gpu", stage.precision, stage.weights // VAE_ENGINES, stage.activations - first, stage.io // 2)
            out.append(
                f"vae_decoder needs {_gib(stage.need)}: with FP16 cache I/O and one streaming engine open at a time it would need "
                f"{_gib(half.need)}" + (" (fits)" if half.need <= plan.budget else " (still too large: a smaller max shape)")
            )
        else:
            out.append(f"{stage.component} needs {_gib(stage.need)} at {stage.precision}: a smaller max shape (480p, fewer frames) or a larger GPU")
    return out


def plan_from_configs(model_dir: Path, profile: GpuProfile, work_dir: Path, low_vram: bool = False) -> list[ConfigPlan]:
    """The plan at each of wan_realsize.RESOLUTIONS for a weightless wan directory."""
    from t2vtrt.build import wan_realsize

    configs = wan_realsize.read_configs(model_dir)
    counts = wan_realsize.meta_counts(configs)
    peaks = wan_realsize.activation_peaks(configs, work_dir)
    return [plan_resolution(profile, label, res, counts, peaks[label], low_vram) for label, res in wan_realsize.RESOLUTIONS.items()]


def write_plan(plans: list[ConfigPlan], model_dir: Path, out: Path) -> Path:
    """engines/<gpu>/plan.json for the configs-only plan."""
    from t2vtrt.runtime.files import write_json

    if not plans:
        raise T2VError("no resolutions planned: wan_realsize.RESOLUTIONS is empty")
    data = {
        "plan_version": PLAN_VERSION,
        "source": "configs",
        "model": {"family": "wan", "path": str(model_dir)},
        "gpu": plans[0].gpu.to_json(),
        "resolutions": {p.label: p.to_json() for p in plans},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, data)
    return out


def run_config_plan(model: str, artifacts: Path, gpu: str, dry_run: bool, low_vram: bool) -> Path:
    """`t2vtrt engines` on a weightless wan directory: print the tables, write engines/<gpu>/plan.json, return its path."""
    import click

    from t2vtrt.build.gpus.profiles import load_profile
    from t2vtrt.build.models import artifact_name

    model_dir = Path(model).expanduser()
    if gpu == "cpu":
        raise T2VError(
            f"{model_dir} has configs but no weights: it can only be planned for a GPU profile; pass --gpu <profile> --dry-run (see `t2vtrt gpus`)"
        )
    if not dry_run:
        raise T2VError(
            f"{model_dir} has no weights (transformer/*.safetensors): `t2vtrt engines --gpu {gpu} --dry-run` plans it from its configs; "
            "copy the weights in to build engines"
        )
    profile = load_profile(gpu)
    root = Path(artifacts) / artifact_name(model)
    plans = plan_from_configs(model_dir, profile, root / "probe", low_vram)
    for plan in plans:
        for line in plan.table():
            click.echo(line)
    return write_plan(plans, model_dir, root / "engines" / profile.name / "plan.json")
