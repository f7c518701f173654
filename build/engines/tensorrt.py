"""The TensorRT target: per-GPU engines built from the plan through polygraphy's loaders.

Thin on purpose: the plan (plan.py) decides sources, profiles and settings on any machine;
this module only checks the device, calls NetworkFromOnnxPath -> CreateConfig ->
EngineBytesFromNetwork per engine, and writes the target directory and its manifest.
tensorrt and polygraphy.backend.trt are imported inside functions, never at module level,
so everything else here runs (and is tested) without a GPU.

Precision lives in the graphs: networks are strongly typed (a flag on TensorRT 10, always on
in 11) and no FP16/INT8 builder flag is ever set.

Version-compatible engines (--version-compatible) keep TensorRT's default: each plan embeds a
copy of this build's lean runtime (libnvinfer_lean: 111 MB unpacked for TensorRT 10.16 CUDA 12;
each plan grows by up to that, the exact figure unmeasured without a GPU), so the full
TensorRT of this version or any later one loads it (engine host code allowed) and
tensorrt_lean of this exact version runs it. Excluding the lean runtime would shrink the plans
but make them loadable only through Runtime.load_runtime(<libnvinfer_lean of this version>),
which neither the runtime nor a later TensorRT does on its own.
"""

from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

import click

from t2vtrt.build.artifacts import ArtifactPaths
from t2vtrt.build.engines.manifest import build_manifest, variant_entry, write_manifest
from t2vtrt.build.engines.plan import BuildPlan, installed_tensorrt_version, make_plan, timing_cache_path
from t2vtrt.build.gpus.detect import GpuInfo, detect_gpu, match_profile
from t2vtrt.build.gpus.profiles import GpuProfile, load_profile
from t2vtrt.runtime.errors import T2VError
from t2vtrt.runtime.files import atomic_dir, sha256_file, write_json

# Building needs polygraphy and onnx (the `build` extra) besides TensorRT (the `gpu` extra).
INSTALL_HINT = "pip install -e '.[build-tools,gpu]' (polygraphy, onnx, tensorrt, cuda-python, nvidia-ml-py; '.[build-tools,gpu-cu13]' for CUDA 13)"
HW_LEVELS = {"none": "NONE", "ampere_plus": "AMPERE_PLUS", "same_compute_capability": "SAME_COMPUTE_CAPABILITY"}
POOLS = {"workspace_mib": "WORKSPACE", "tactic_shared_memory_mib": "TACTIC_SHARED_MEMORY"}


def build_gpu_target(
    paths: ArtifactPaths,
    target: str,
    quiet: bool = False,
    dry_run: bool = False,
    low_vram: bool = False,
    version_compatible: bool = False,
    hardware_compat: str | None = None,
) -> Path:
    """Plan, check and build engines/<target>/; returns the manifest (plan.json with dry_run)."""
    profile = load_profile(target)
    write_low_precision_graphs(paths, profile, quiet)

    def plan_for(tensorrt_version: str | None) -> Any:
        """The build plan for this target and these options, under one TensorRT version."""
        return make_plan(
            paths,
            profile,
            low_vram=low_vram,
            version_compatible=version_compatible,
            hardware_compat=hardware_compat,
            tensorrt_version=tensorrt_version,
        )

    plan = plan_for(installed_tensorrt_version())
    plan_path = write_plan(paths, plan)
    if dry_run or not quiet:
        for line in plan.summary():
            click.echo(line, err=not dry_run)
    if dry_run:
        return plan_path
    if not plan.fits:
        raise T2VError(refusal(plan, plan_path))
    gpu = detect_gpu()
    command = rebuild_command(paths, target, low_vram, version_compatible, hardware_compat)
    if gpu is None:
        onnx_dir = write_portable_onnx(paths, plan)
        raise T2VError(no_gpu_message(plan, plan_path, onnx_dir, command))
    check_device(gpu, profile, plan.builder["hardware_compatibility"])
    trt = import_tensorrt()
    if installed_tensorrt_version() != trt.__version__:  # metadata and module disagree: trust the module
        plan = plan_for(trt.__version__)
    return build_target(paths, plan, gpu, trt, quiet)


def write_low_precision_graphs(paths: ArtifactPaths, profile: GpuProfile, quiet: bool) -> None:
    """onnx/<component>.fp16.onnx (bf16 where fp16 overflows), gated against FP32; reruns reuse them."""
    from t2vtrt.build.precision import LOW_PRECISIONS, write_low_precision

    allowed = tuple(p for p in LOW_PRECISIONS if p in profile.precisions)
    step = (lambda what: None) if quiet else (lambda what: click.echo(f"writing and gating {what} graph ...", err=True))
    for component, record in write_low_precision(paths, allowed, on_step=step).items():
        if not record["gate"]["passed"]:
            click.echo(
                f"note: {component} {record['precision']} failed its gate ({'; '.join(record['gate']['failures'])}); this target builds it in fp32",
                err=True,
            )


def write_plan(paths: ArtifactPaths, plan: BuildPlan) -> Path:
    """engines/<gpu>/plan.json (atomic; the build later ships it inside the target too)."""
    path = paths.engines_dir(plan.target) / "plan.json"
    write_json(path, plan.to_json())
    return path


def refusal(plan: BuildPlan, plan_path: Path) -> str:
    """One line: what does not fit, and what would."""
    v = plan.vram
    mode = "with --low-vram" if v.mode == "low_vram" else "with every engine resident"
    return (
        f"the engines for {plan.target} need about {v.required / 2**30:.1f} GiB {mode} but the profile has "
        f"{plan.profile.vram_gb:g} GiB (plan: {plan_path}); would fit: " + "; ".join(v.alternatives)
    )


def rebuild_command(paths: ArtifactPaths, target: str, low_vram: bool, version_compatible: bool, hardware_compat: str | None) -> str:
    """The exact `t2vtrt engines` command that builds this target on the right GPU."""
    args = ["t2vtrt", "engines", "--model", paths.root.name, "--artifacts", str(paths.root.parent), "--gpu", target]
    args += ["--low-vram"] if low_vram else []
    args += ["--version-compatible"] if version_compatible else []
    args += ["--hardware-compat", hardware_compat] if hardware_compat else []
    return shlex.join(args)


def no_gpu_message(plan: BuildPlan, plan_path: Path, onnx_dir: Path, command: str) -> str:
    """The one line printed when the engines cannot be built on this machine."""
    sm = plan.profile.sm
    return (
        f"TensorRT engines for {plan.target} must be built on an {sm} GPU and this machine has none; "
        f"wrote the plan {plan_path} and the TensorRT-ready ONNX in {onnx_dir}; on an {sm} GPU machine "
        f"(copy {plan.root} there) run: {INSTALL_HINT.split(' (')[0]} && {command}"
    )


def write_portable_onnx(paths: ArtifactPaths, plan: BuildPlan) -> Path:
    """Copy each graph the plan builds from (and its external weights) into engines/<gpu>/onnx/."""
    from t2vtrt.build.graphfiles import external_data_files

    out = paths.engines_dir(plan.target) / "onnx"
    out.mkdir(parents=True, exist_ok=True)
    sources = {v.source for c in plan.components.values() for v in c.variants.values()}
    for source in sorted(sources):
        for file in [source, *external_data_files(source)]:
            if not file.is_file():
                raise T2VError(f"{source} keeps weights in {file}, which is missing: run `t2vtrt export` (or `make engines`) again")
            _copy_if_changed(file, out / file.name)
    return out


def _copy_if_changed(src: Path, dst: Path) -> None:
    """Copy unless dst already has src's size and mtime (a rerun copies nothing)."""
    if dst.is_file() and dst.stat().st_size == src.stat().st_size and dst.stat().st_mtime_ns == src.stat().st_mtime_ns:
        return
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.copy2(src, tmp)
    tmp.replace(dst)


def check_device(gpu: GpuInfo, profile: GpuProfile, hardware_compat: str) -> None:
    """Refuse a GPU whose compute capability differs from the profile's, unless ampere_plus covers both."""
    if gpu.compute_capability == profile.compute_capability:
        return
    both_ampere = min(_cc(gpu.compute_capability), profile.capability) >= (8, 0)
    if hardware_compat == "ampere_plus" and both_ampere:
        return
    try:
        hint = f"--gpu {match_profile(gpu).name}"
    except T2VError:
        hint = "--gpu <a profile with compute_capability " + gpu.compute_capability + ">"
    raise T2VError(
        f"this machine's GPU is {gpu.name} ({gpu.sm}) but profile {profile.name} is {profile.sm}: build with {hint}"
        + (", or pass --hardware-compat ampere_plus for engines that run on any Ampere or newer GPU" if both_ampere else "")
    )


def _cc(text: str) -> tuple[int, int]:
    """'8.6' -> (8, 6)."""
    major, minor = text.split(".")
    return int(major), int(minor)


def import_tensorrt() -> Any:
    """The full tensorrt module and polygraphy's TensorRT loaders; a one-line error with the install command."""
    if sys.modules.get("tensorrt_lean") is not None:  # two libnvinfer in one process: never load the second
        raise T2VError(
            "this process already runs engines with tensorrt_lean, which cannot build: build the engines "
            "in a separate process (`t2vtrt engines --gpu <profile>`)"
        )
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise T2VError(f"TensorRT is not installed, so engines cannot be built here: {INSTALL_HINT}") from exc
    try:
        import polygraphy.backend.trt  # noqa: F401 - the loaders build_engine uses
    except ImportError as exc:
        raise T2VError(f"polygraphy is not installed, so engines cannot be built here: {INSTALL_HINT}") from exc
    return trt


def share_logger(trt: Any) -> None:
    """Hand polygraphy's loaders the runtime's process logger when it exists (TensorRT keeps one logger per process)."""
    from polygraphy.backend.trt import util

    from t2vtrt.runtime.backends.tensorrt import current_logger

    if util.TRT_LOGGER is None and current_logger() is not None:
        util.TRT_LOGGER = current_logger()


def build_target(paths: ArtifactPaths, plan: BuildPlan, gpu: GpuInfo, trt: Any, quiet: bool) -> Path:
    """Build every engine of the plan into a temp dir, write plan + manifest, swap it in whole."""
    cache = timing_cache_path(paths, plan.target, trt.__version__)
    cache.parent.mkdir(parents=True, exist_ok=True)
    built: dict[str, dict[str, str]] = {}
    with atomic_dir(paths.engines_dir(plan.target)) as tmp:
        for name, component in plan.components.items():
            built[name] = {}
            for precision, variant in component.variants.items():
                if not quiet:
                    click.echo(f"building {variant.engine} from {variant.source.name} ...", err=True)
                data = build_engine(trt, variant.source, component.shapes, plan.builder, cache, quiet)
                (tmp / variant.engine).write_bytes(data)
                built[name][precision] = variant.engine
        write_json(tmp / "plan.json", plan.to_json())
        gpu_json = {"name": gpu.name, "compute_capability": gpu.compute_capability, "vram_gb": plan.profile.vram_gb}
        write_gpu_manifest(paths, plan, tmp, built, gpu_json, trt.__version__)
    return paths.engines_dir(plan.target) / "manifest.json"


def build_engine(trt: Any, source: Path, shapes: dict[str, list[list[int]]], builder: dict[str, Any], cache: Path, quiet: bool) -> Any:
    """One serialized engine (bytes-like trt.IHostMemory, written as is) from one ONNX graph, through polygraphy."""
    from polygraphy.logger import G_LOGGER

    G_LOGGER.module_severity = G_LOGGER.ERROR if quiet else G_LOGGER.WARNING
    share_logger(trt)
    try:
        return engine_loader(trt, source, shapes, builder, cache)()
    except Exception as exc:  # noqa: BLE001 - polygraphy raises its own exception types; keep one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise T2VError(f"TensorRT could not build an engine from {source}: {first}; rerun without --quiet for the builder log") from exc


def engine_loader(trt: Any, source: Path, shapes: dict[str, list[list[int]]], builder: dict[str, Any], cache: Path) -> Any:
    """polygraphy's lazy loaders: NetworkFromOnnxPath -> CreateConfig -> EngineBytesFromNetwork (nothing runs yet)."""
    from polygraphy.backend.trt import CreateConfig, EngineBytesFromNetwork, NetworkFromOnnxPath, Profile

    profile = Profile()
    for name, (lo, opt, hi) in shapes.items():
        profile.add(name, min=lo, opt=opt, max=hi)
    compat = builder["hardware_compatibility"]
    network = NetworkFromOnnxPath(str(source), strongly_typed=strongly_typed_flag(trt))
    config = CreateConfig(  # no fp16/int8/bf16 flags: strongly typed networks take precision from the graph
        profiles=[profile],
        load_timing_cache=str(cache),
        builder_optimization_level=builder["builder_optimization_level"],
        memory_pool_limits=memory_pools(trt, builder["memory_pool_limits_mib"]),
        hardware_compatibility_level=hardware_level(trt, compat) if compat != "none" else None,
        version_compatible=builder["version_compatible"] or None,
        exclude_lean_runtime=builder["exclude_lean_runtime"] or None,
    )
    return EngineBytesFromNetwork(network, config=config, save_timing_cache=str(cache))


def strongly_typed_flag(trt: Any) -> bool:
    """True on TensorRT 10 (the flag exists); False on 11, where every network is strongly typed."""
    return hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED") and int(trt.__version__.split(".")[0]) < 11


def memory_pools(trt: Any, limits_mib: dict[str, int]) -> dict[Any, int]:
    """{'workspace_mib': 4096} -> {trt.MemoryPoolType.WORKSPACE: bytes}."""
    return {getattr(trt.MemoryPoolType, POOLS[key]): int(mib) << 20 for key, mib in limits_mib.items() if key in POOLS}


def hardware_level(trt: Any, level: str) -> Any:
    """The trt.HardwareCompatibilityLevel for a profile's level name."""
    value = getattr(getattr(trt, "HardwareCompatibilityLevel", None), HW_LEVELS[level], None)
    if value is None:
        raise T2VError(f"TensorRT {trt.__version__} has no hardware-compatibility level {level!r}: use another --hardware-compat or upgrade TensorRT")
    return value


def write_gpu_manifest(
    paths: ArtifactPaths, plan: BuildPlan, target_dir: Path, built: dict[str, dict[str, str]], gpu: dict[str, Any], tensorrt_version: str
) -> Path:
    """manifest.json for the engines in target_dir: backend tensorrt, validated by the shared schema."""
    note = (
        (f"version-compatible, lean runtime embedded: runs on tensorrt {tensorrt_version} or later, or tensorrt_lean {tensorrt_version} exactly")
        if plan.builder["version_compatible"]
        else None
    )
    variants: dict[str, dict[str, dict[str, Any]]] = {}
    for component, by_precision in built.items():
        variants[component] = {
            precision: variant_entry(
                target_dir,
                file,
                precision,
                "tensorrt",
                tensorrt_version=tensorrt_version,
                compute_capability=gpu["compute_capability"],
                **({"note": note} if note else {}),
                **_step_schedule(paths, component, precision, by_precision),
            )
            for precision, file in by_precision.items()
        }
    info = plan.info
    shutil.copyfile(paths.onnx_dir / info["tokenizer"]["file"], target_dir / "tokenizer.json")
    target = {
        "name": plan.target,
        "backend": "tensorrt",
        "gpu": gpu,
        "tensorrt_version": tensorrt_version,
        "hardware_compatibility": plan.builder["hardware_compatibility"],
        "version_compatible": bool(plan.builder["version_compatible"]),
    }
    export = {
        **info,
        "components": {n: c.spec for n, c in plan.components.items()},
        "ranges": plan.ranges.to_json(),
        "defaults": clamp_defaults(info["defaults"], plan.ranges.to_json()),
    }
    manifest = build_manifest(
        export, target, variants, "tokenizer.json", sha256_file(target_dir / "tokenizer.json"), default_precision=plan.default_precision
    )
    return write_manifest(target_dir, manifest)


def _step_schedule(paths: ArtifactPaths, component: str, precision: str, built: dict[str, str]) -> dict[str, Any]:
    """{"schedule": ...} for the INT8 denoiser: the gate's step schedule, falling back to the float engine built beside it."""
    if component != "denoiser" or precision != "int8":
        return {}
    from t2vtrt.calibration.gate import gated_schedule

    fallback = next((p for p in ("fp16", "bf16", "fp32") if p in built), None)
    graph = paths.onnx("denoiser", "int8")
    schedule = gated_schedule(paths.calib_dir / "gate.json", graph, fallback or "fp16")
    if schedule and fallback is None:
        raise T2VError(
            f"{graph.name}'s step schedule runs its first steps in a float denoiser, but none was built for "
            "this target: let the engines stage write denoiser.fp16.onnx (or build with INT8=0)"
        )
    return {"schedule": schedule} if schedule else {}


def clamp_defaults(defaults: dict[str, Any], ranges: dict[str, list[int]]) -> dict[str, Any]:
    """Generation defaults moved inside the built ranges (a GPU profile may narrow them)."""
    out = dict(defaults)
    for key in ("frames", "height", "width"):
        lo, _, hi = ranges[key]
        out[key] = min(max(int(out[key]), lo), hi)
    return out
