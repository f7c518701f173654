"""The build plan for a GPU profile: what each engine is built from, with which profile and settings,
and whether it fits the GPU's memory (docs/architecture.md#engines; issue: per-GPU TensorRT engines).

What each graph costs comes from graph_memory.py; here those costs are summed per mode:
resident = every engine loaded at once; --low-vram = one stage at a time (the largest stage).
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from t2vtrt.build.artifacts import ArtifactPaths, components_of, read_export_info
from t2vtrt.build.engines.graph_memory import GraphStats, analyze_graph, graph_precision, graph_without_weights
from t2vtrt.build.families.spec import Range, ShapeRanges, resolve_shape
from t2vtrt.build.gpus.profiles import GpuProfile
from t2vtrt.runtime.errors import T2VError

GIB = 1 << 30
MIB = 1 << 20
MIN_WORKSPACE = 256 * MIB
# Graph variants the TensorRT target builds, besides the patched graph onnx/<component>.opt.onnx.
EXTRA_KINDS = ("fp16", "bf16", "int8", "fp8")
PREFERENCE = ("int8", "fp8", "fp16", "bf16", "fp32")  # the default precision: the lowest one built


# --------------------------------------------------------------------------- shapes


def effective_ranges(model: ShapeRanges, gpu: ShapeRanges | None) -> ShapeRanges:
    """The GPU profile's ranges intersected with the model's; the model's own range where they do not meet."""
    if gpu is None:
        return model
    return ShapeRanges(**{axis: _intersect(getattr(model, axis), getattr(gpu, axis)) for axis in ("batch", "frames", "height", "width")})


def _intersect(model: Range, gpu: Range) -> Range:
    """[max(mins), opt, min(maxes)], or the model's range when they are disjoint."""
    lo, hi = max(model[0], gpu[0]), min(model[2], gpu[2])
    if lo > hi:
        return model
    opt = gpu[1] if lo <= gpu[1] <= hi else min(max(model[1], lo), hi)
    return (lo, opt, hi)


def component_specs_for(info: dict[str, Any], ranges: ShapeRanges) -> dict[str, dict[str, Any]] | None:
    """The manifest's component entries for other ranges than the export's; None when export.json cannot say."""
    if ShapeRanges.from_json(info["ranges"]) == ranges:
        return info["components"]
    from t2vtrt.build.families import get_family

    try:
        specs = get_family(info["model"]["family"]).component_specs(info.get("config", {}), ranges)
    except KeyError:
        return None  # an export.json older than its family's config keys: keep the exported ranges
    return {name: spec.to_json() for name, spec in specs.items()}


def input_profiles(spec: dict[str, Any]) -> dict[str, list[list[int]]]:
    """Per input: its [min, opt, max] shapes (the TensorRT optimization profile)."""
    axes = spec["axes"]
    return {t["name"]: [list(resolve_shape(tuple(t["shape"]), {a: r[i] for a, r in axes.items()})) for i in range(3)] for t in spec["inputs"]}


# --------------------------------------------------------------------------- the plan


@dataclass
class VariantPlan:
    """One engine to build: a component at one precision."""

    precision: str
    source: Path  # the TensorRT-ready ONNX graph
    engine: str  # file name in engines/<gpu>/
    stats: GraphStats

    def to_json(self, root: Path) -> dict[str, Any]:
        """The plan's record (paths relative to artifacts/<model>)."""
        return {
            "precision": self.precision,
            "source": _relative(self.source, root),
            "engine": self.engine,
            "weights_bytes": self.stats.weights["engine"],
        }


@dataclass
class ComponentPlan:
    """One component: its manifest entry, optimization profile, and the engines built for it."""

    name: str
    spec: dict[str, Any]
    shapes: dict[str, list[list[int]]]
    variants: dict[str, VariantPlan]
    runtime_precision: str  # what the runtime opens by default (the manifest's fallback rule)
    # Variants the runtime opens beside it: a step schedule's float fallback runs the first steps, and each
    # engine holds its own execution context, so both are resident while the denoiser runs.
    also_open: list[str] = field(default_factory=list)

    @property
    def stats(self) -> GraphStats:
        """The analysis of the variant the runtime runs."""
        return self.variants[self.runtime_precision].stats

    def need(self, scale: float = 1.0) -> int:
        """Device bytes while this component runs: weights + context memory + I/O buffers of every engine it opens."""
        total = 0.0
        for precision in (self.runtime_precision, *self.also_open):
            s = self.variants[precision].stats
            total += s.weights["engine"] + scale * (s.activation_bytes + s.io_bytes)
        return int(total)

    def to_json(self, root: Path) -> dict[str, Any]:
        """The plan's record."""
        s = self.stats
        return {
            "profile": self.shapes,
            "runtime_precision": self.runtime_precision,
            "also_open": self.also_open,
            "need_bytes": self.need(),
            "variants": {p: v.to_json(root) for p, v in self.variants.items()},
            "weights_bytes_at": {k: v for k, v in s.weights.items() if k != "engine"},
            "weights_bytes": s.weights["engine"],
            "activation_bytes": s.activation_bytes,
            "io_bytes": s.io_bytes,
            "fused_attention_bytes": s.fused_attention_bytes,
            "unknown_shapes": s.unknown_shapes,
        }


@dataclass
class VramPlan:
    """Whether the engines fit the GPU, in which mode, and what would fit otherwise."""

    total: int
    reserve: int
    resident: int
    low_vram: int
    build: int
    workspace: int
    largest_context: int
    mode: str  # resident | low_vram
    alternatives: list[str] = field(default_factory=list)

    @property
    def required(self) -> int:
        """Bytes the chosen mode needs, reserve included."""
        return (self.low_vram if self.mode == "low_vram" else self.resident) + self.reserve

    @property
    def fits(self) -> bool:
        """True when the chosen mode fits the profile's VRAM."""
        return self.required <= self.total

    def to_json(self) -> dict[str, Any]:
        """The plan's record, in bytes and GiB."""
        data = dict(self.__dict__)
        data.update(
            required=self.required,
            fits=self.fits,
            gib={
                k: round(v / GIB, 3)
                for k, v in (
                    ("total", self.total),
                    ("required", self.required),
                    ("resident", self.resident),
                    ("low_vram", self.low_vram),
                    ("build", self.build),
                )
            },
        )
        return data


@dataclass
class BuildPlan:
    """Everything `t2vtrt engines --gpu NAME` will do, written to engines/<gpu>/plan.json."""

    target: str
    profile: GpuProfile
    root: Path  # artifacts/<model>
    info: dict[str, Any]
    ranges: ShapeRanges
    components: dict[str, ComponentPlan]
    builder: dict[str, Any]
    vram: VramPlan
    default_precision: str
    tensorrt_version: str | None
    notes: list[str] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        """The chosen mode fits the GPU."""
        return self.vram.fits

    def to_json(self) -> dict[str, Any]:
        """plan.json."""
        return {
            "plan_version": 1,
            "target": self.target,
            "gpu": self.profile.to_json(),
            "model": self.info["model"],
            "tensorrt_version": self.tensorrt_version,
            "ranges": self.ranges.to_json(),
            "default_precision": self.default_precision,
            "builder": self.builder,
            "components": {name: c.to_json(self.root) for name, c in self.components.items()},
            "vram": self.vram.to_json(),
            "notes": self.notes,
        }

    def summary(self) -> list[str]:
        """Human-readable lines for --dry-run."""
        v = self.vram
        lines = [
            f"plan for {self.target} ({self.profile.description or self.profile.sm}, {self.profile.sm}, "
            f"{self.profile.vram_gb:g} GiB), model {self.info['model']['name']}, TensorRT {self.tensorrt_version or 'not installed'}",
            "  ranges: " + ", ".join(f"{k} {v}" for k, v in self.ranges.to_json().items()),
        ]
        for name, comp in self.components.items():
            s = comp.stats
            built = ", ".join(f"{p} <- {_relative(vp.source, self.root)}" for p, vp in comp.variants.items())
            lines.append(
                f"  {name}: {built}; runs {comp.runtime_precision}: weights {_gib(s.weights['engine'])}, "
                f"activations {_gib(s.activation_bytes)}, io {_gib(s.io_bytes)} at max shape"
                + (f"; with {', '.join(comp.also_open)} open beside it (step schedule): {_gib(comp.need())}" if comp.also_open else "")
            )
        lines.append(
            f"  builder: opt level {self.builder['builder_optimization_level']}, workspace {self.builder['workspace_mib']} MiB, "
            f"hardware compat {self.builder['hardware_compatibility']}, version compatible {self.builder['version_compatible']}"
        )
        lines.append(
            f"  VRAM: resident {_gib(v.resident)}, --low-vram {_gib(v.low_vram)}, build {_gib(v.build)}, "
            f"reserve {_gib(v.reserve)}; {v.mode} needs {_gib(v.required)} of {_gib(v.total)}: " + ("fits" if v.fits else "DOES NOT FIT")
        )
        lines += [f"  would fit: {a}" for a in v.alternatives] if not v.fits else []
        lines += [f"  note: {n}" for n in self.notes]
        return lines


def _gib(n: int) -> str:
    """Bytes as GiB text (MiB below 1 GiB, so small models do not read as zero)."""
    return f"{n / GIB:.2f} GiB" if n >= GIB else f"{n / MIB:.1f} MiB"


def _relative(path: Path, root: Path) -> str:
    """A path relative to artifacts/<model> when inside it."""
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def installed_tensorrt_version() -> str | None:
    """The installed TensorRT's version from package metadata (never imports tensorrt)."""
    for dist in ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-lean", "tensorrt_lean"):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def short_version(version: str | None) -> str:
    """'10.13.3.9' -> '10.13.3'; 'NA' when TensorRT is not installed here."""
    return ".".join(version.split(".")[:3]) if version else "NA"


def engine_name(component: str, precision: str, tensorrt_version: str | None, sm: str) -> str:
    """<component>.<precision>.trt<version>.<sm>.plan, e.g. denoiser.int8.trt10.13.3.sm86.plan."""
    return f"{component}.{precision}.trt{short_version(tensorrt_version)}.{sm}.plan"


def trt_sources(paths: ArtifactPaths, allowed: tuple[str, ...], notes: list[str]) -> dict[str, dict[str, Path]]:
    """Per component and precision, the TensorRT-ready graph: the fp16/bf16/int8/fp8 graphs when built, else *.opt.onnx (fp32)."""
    sources: dict[str, dict[str, Path]] = {}
    for component in components_of(read_export_info(paths)):
        opt = paths.onnx(component, "opt")
        if not opt.is_file():
            raise T2VError(f"{opt} is missing: run `t2vtrt surgery` (or `make engines`) first")
        low: dict[str, Path] = {}
        for kind in EXTRA_KINDS:
            graph = paths.onnx(component, kind)
            if not graph.is_file():
                continue
            if kind not in allowed:
                notes.append(f"{_relative(graph, paths.root)} skipped: this GPU profile does not run {kind}")
                continue
            low[kind] = graph
        # An FP32 engine next to a lower-precision one is never run by default and costs build time and build
        # memory (a 1.4B denoiser's FP32 engine alone is 5.3 GiB): GPU targets build it only when nothing else exists.
        sources[component] = low or {graph_precision(graph_without_weights(opt)): opt}
    return sources


def runtime_precision(default: str, built: dict[str, Any]) -> str:
    """The manifest rule (runtime.manifest.Manifest.variant): the default if built, else fp16, else fp32."""
    for precision in (default, "fp16", "fp32"):
        if precision in built:
            return precision
    return next(iter(built))


def make_plan(
    paths: ArtifactPaths,
    profile: GpuProfile,
    low_vram: bool = False,
    version_compatible: bool = False,
    hardware_compat: str | None = None,
    tensorrt_version: str | None = None,
) -> BuildPlan:
    """The build plan for `profile`: sources, optimization profiles, builder settings, VRAM estimate."""
    info = read_export_info(paths)
    notes: list[str] = []
    tensorrt_version = tensorrt_version or installed_tensorrt_version()
    if tensorrt_version is None:
        notes.append("TensorRT is not installed here: engine names get its version at build time")
    ranges, specs = _ranges_and_specs(info, profile, notes)
    sources = trt_sources(paths, profile.precisions, notes)
    built = {p for by_precision in sources.values() for p in by_precision}
    default = next(p for p in PREFERENCE if p in built)
    components = {name: component_plan(name, specs[name], sources[name], default, tensorrt_version, profile.sm) for name in sources}
    components["denoiser"].also_open = schedule_fallback(paths, components["denoiser"], notes)
    vram = estimate_vram(profile, components, ranges, low_vram, default)
    if not vram.fits and info["latent"].get("vae_decode") != "streaming":  # a streaming VAE decodes one latent frame a call already
        chunked = chunk_vae(profile, components, ranges, low_vram, default, tensorrt_version, notes)
        if chunked is not None:
            vram = chunked
    for name, comp in components.items():
        if comp.stats.unknown_shapes:
            notes.append(
                f"{name}: {comp.stats.unknown_shapes} intermediate shapes unknown after shape inference, each guessed "
                f"as its node's largest input (e.g. {', '.join(comp.stats.guessed)})"
            )
    level = hardware_compat or profile.hardware_compatibility
    builder = {
        "builder_optimization_level": profile.builder_optimization_level,
        "workspace_mib": vram.workspace // MIB,
        "memory_pool_limits_mib": {**profile.memory_pool_limits, "workspace_mib": vram.workspace // MIB},
        "hardware_compatibility": level,
        "version_compatible": version_compatible,
        # TensorRT's default: each version-compatible plan embeds its lean runtime, so later TensorRT loads it
        # on its own; an excluded one needs Runtime.load_runtime(libnvinfer_lean of this very version).
        "exclude_lean_runtime": False,
        "strongly_typed": True,
        "precision_flags": [],  # precision lives in the graphs
        "timing_cache": _relative(timing_cache_path(paths, profile.name, tensorrt_version), paths.root),
    }
    return BuildPlan(profile.name, profile, paths.root, info, ranges, components, builder, vram, default, tensorrt_version, notes)


def schedule_fallback(paths: ArtifactPaths, denoiser: ComponentPlan, notes: list[str]) -> list[str]:
    """[the float variant an INT8 denoiser's gated step schedule also opens], or [] when it runs alone."""
    if denoiser.runtime_precision != "int8":
        return []
    from t2vtrt.calibration.gate import gated_schedule

    fallback = next((p for p in ("fp16", "bf16", "fp32") if p in denoiser.variants), None)
    try:
        schedule = gated_schedule(paths.calib_dir / "gate.json", paths.onnx("denoiser", "int8"), fallback or "fp16")
    except T2VError as exc:
        notes.append(f"denoiser: no step schedule counted ({exc})")
        return []
    if schedule is None:
        return []
    if fallback is None:
        notes.append("denoiser: the gated step schedule needs a float denoiser engine and none is planned; the build will refuse")
        return []
    notes.append(f"denoiser: the step schedule ({schedule['reason']}) keeps the int8 and {fallback} engines resident together")
    return [fallback]


def component_plan(name: str, spec: dict[str, Any], sources: dict[str, Path], default: str, tensorrt_version: str | None, sm: str) -> ComponentPlan:
    """One component's variants, analysed at the max shape of its optimization profile."""
    shapes = input_profiles(spec)
    max_shapes = {k: tuple(v[2]) for k, v in shapes.items()}
    variants = {p: VariantPlan(p, src, engine_name(name, p, tensorrt_version, sm), analyze_graph(src, max_shapes)) for p, src in sources.items()}
    return ComponentPlan(name, spec, shapes, variants, runtime_precision(default, variants))


def chunk_vae(
    profile: GpuProfile,
    components: dict[str, ComponentPlan],
    ranges: ShapeRanges,
    low_vram: bool,
    default: str,
    tensorrt_version: str | None,
    notes: list[str],
) -> VramPlan | None:
    """Decode the video in chunks of fewer frames (the vae_decoder's batch axis) when that makes the plan fit.

    The runtime decodes frames in chunks of at most the axis maximum, so the largest chunk that fits is
    taken; `components` is updated in place. None (and nothing changed) when no chunk size fits.
    """
    vae = components["vae_decoder"]
    lo, opt, hi = vae.spec["axes"]["batch"]
    for chunk in sorted({max(lo, hi // d) for d in (2, 3, 4, 6, 8, 12, 16, 24)} | {lo}, reverse=True):
        if chunk >= hi:
            continue
        spec = {**vae.spec, "axes": {**vae.spec["axes"], "batch": [lo, min(opt, chunk), chunk]}}
        sources = {p: v.source for p, v in vae.variants.items()}
        trial = {**components, "vae_decoder": component_plan("vae_decoder", spec, sources, default, tensorrt_version, profile.sm)}
        vram = estimate_vram(profile, trial, ranges, low_vram, default)
        if vram.fits:
            components.update(trial)
            notes.append(
                f"vae_decoder: decodes {chunk} frames at a time (not {hi}) so the plan fits: "
                f"activations {_gib(vae.stats.activation_bytes)} -> {_gib(trial['vae_decoder'].stats.activation_bytes)}"
            )
            return vram
    return None


def _ranges_and_specs(info: dict[str, Any], profile: GpuProfile, notes: list[str]) -> tuple[ShapeRanges, dict[str, Any]]:
    """The effective ranges (GPU profile within the model's) and the component entries for them."""
    model_ranges = ShapeRanges.from_json(info["ranges"])
    ranges = effective_ranges(model_ranges, profile.ranges_for(info["model"]["family"]))
    specs = component_specs_for(info, ranges)
    if specs is None:
        notes.append("export.json has no family config, so the GPU profile's shapes were not applied: the engines use the exported ranges")
        return model_ranges, info["components"]
    return ranges, specs


def timing_cache_path(paths: ArtifactPaths, target: str, tensorrt_version: str | None) -> Path:
    """engines/timing/<gpu>.trt<version>.cache: kept across rebuilds (outside the swapped target dir)."""
    return paths.root / "engines" / "timing" / f"{target}.trt{short_version(tensorrt_version)}.cache"


# --------------------------------------------------------------------------- VRAM


def estimate_vram(profile: GpuProfile, components: dict[str, ComponentPlan], ranges: ShapeRanges, low_vram: bool, default: str) -> VramPlan:
    """Resident / low-VRAM / build needs against the profile, with what would fit otherwise."""
    total = int(profile.vram_gb * GIB)
    reserve = int(profile.reserve_gb * GIB)
    resident, per_stage = _needs(components)
    wanted = profile.memory_pool_limits.get("workspace_mib", 4096) * MIB
    # The builder never needs more scratch than is left beside the largest engine; cap it there.
    workspace = max(MIN_WORKSPACE, min(wanted, total - reserve - per_stage))
    build = max(c.stats.weights["engine"] + c.stats.activation_bytes for c in components.values()) + workspace
    vram = VramPlan(
        total,
        reserve,
        resident,
        per_stage,
        build,
        workspace,
        max(c.stats.activation_bytes for c in components.values()),
        "low_vram" if low_vram else "resident",
    )
    if not vram.fits:
        vram.alternatives = alternatives(vram, components, ranges, default)
    return vram


def _needs(components: dict[str, ComponentPlan], scale: float = 1.0, denoiser_int8: bool = False) -> tuple[int, int]:
    """(resident bytes, largest single stage bytes) with activations scaled and optionally an int8 denoiser."""
    needs = []
    for name, comp in components.items():
        need = comp.need(scale)
        if denoiser_int8 and name == "denoiser":
            need += comp.stats.weights["int8"] - comp.stats.weights["engine"]
        needs.append(need)
    return sum(needs), max(needs)


def alternatives(vram: VramPlan, components: dict[str, ComponentPlan], ranges: ShapeRanges, default: str) -> list[str]:
    """What would fit: per-stage load/unload, an INT8 denoiser, a smaller max shape."""
    budget = vram.total - vram.reserve
    out = []
    if vram.mode == "resident" and vram.low_vram <= budget:
        out.append(f"--low-vram (load and free each stage's engine) needs {_gib(vram.low_vram + vram.reserve)}")
    if default != "int8":
        resident, stage = _needs(components, denoiser_int8=True)
        need = stage if vram.mode == "low_vram" else resident
        if need <= budget:
            out.append(f"an INT8 denoiser (run `t2vtrt calibrate` and `t2vtrt quantize` first) needs {_gib(need + vram.reserve)}")
    smaller = smaller_shape(components, ranges, budget, vram.mode == "low_vram")
    if smaller:
        out.append(smaller)
    if not out:
        out.append("nothing in reach: pick a GPU profile with more memory (see `t2vtrt gpus`)")
    return out


def smaller_shape(components: dict[str, ComponentPlan], ranges: ShapeRanges, budget: int, low_vram: bool) -> str | None:
    """The largest max shape (frames, then height/width) that fits, scaling activations by volume (approximate)."""
    frames_lo, _, frames_hi = ranges.frames
    volume = ranges.batch[2] * frames_hi * ranges.height[2] * ranges.width[2]
    candidates = []
    frames = frames_hi
    while frames >= frames_lo:
        for factor in (1.0, 0.75, 0.5, 0.25):
            h = max(ranges.height[0], int(ranges.height[2] * factor) // 8 * 8)
            w = max(ranges.width[0], int(ranges.width[2] * factor) // 8 * 8)
            candidates.append((frames * h * w, frames, h, w))
        if frames == frames_lo:
            break
        frames = max(frames_lo, frames // 2)
    for vol, frames, h, w in sorted(set(candidates), reverse=True):
        scale = ranges.batch[2] * vol / volume
        resident, stage = _needs(components, scale)
        need = stage if low_vram else resident
        if scale < 1.0 and need <= budget:
            return f"a max shape of {frames} frames at {h}x{w} needs about {_gib(need)} plus the reserve (narrow the GPU profile's [shapes])"
    return None
