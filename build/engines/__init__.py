"""The engines stage: build a target directory for `cpu` or a GPU profile."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from t2vtrt.build.artifacts import ArtifactPaths


def resolve_target(gpu: str) -> str:
    """`auto` -> the detected GPU's profile when TensorRT is installed, else `cpu` (a note says why)."""
    if gpu != "auto":
        return gpu
    from t2vtrt.build.gpus.detect import auto_profile

    profile = auto_profile()
    if profile is None:
        return "cpu"
    if importlib.util.find_spec("tensorrt") is None:
        # A GPU machine without TensorRT still gets working (ONNX Runtime) artifacts from `make engines`.
        print(
            f"note: this machine's GPU matches profile {profile} but TensorRT is not installed, so auto builds "
            f"the cpu target; for engines: pip install -e '.[gpu]' and pass --gpu {profile}",
            file=sys.stderr,
        )
        return "cpu"
    return profile


def build_engines(
    paths: ArtifactPaths,
    target: str,
    quiet: bool = False,
    dry_run: bool = False,
    low_vram: bool = False,
    version_compatible: bool = False,
    hardware_compat: str | None = None,
) -> Path:
    """Build engines/<target>/ and return its manifest path (plan.json for a GPU target's dry run)."""
    if target == "cpu":
        from t2vtrt.build.engines.cpu import build_cpu_target

        if dry_run or version_compatible or hardware_compat:
            from t2vtrt.runtime.errors import T2VError

            raise T2VError("--dry-run, --version-compatible and --hardware-compat apply to GPU targets: pass --gpu <profile> (see `t2vtrt gpus`)")
        return build_cpu_target(paths)  # --low-vram is a runtime choice there: nothing to plan
    from t2vtrt.build.engines.tensorrt import build_gpu_target

    check_gpu_sources(paths)
    return build_gpu_target(
        paths, target, quiet=quiet, dry_run=dry_run, low_vram=low_vram, version_compatible=version_compatible, hardware_compat=hardware_compat
    )


def check_gpu_sources(paths: ArtifactPaths) -> None:
    """GPU targets build from onnx/ directly: refuse a broken hash chain or an INT8 graph made from another model."""
    from t2vtrt.build.provenance import check_chain, fresh_int8
    from t2vtrt.runtime.errors import T2VError

    if not paths.surgery_report.is_file():
        return  # the plan refuses missing graphs itself, naming the stage
    provenance = check_chain(paths)
    for kind in ("int8",):  # the Q/DQ graph TensorRT builds from (the -cpuverify / -u8s8 ones are cpu-only)
        graph = paths.onnx("denoiser", kind)
        reason = fresh_int8(paths, provenance, graph) if graph.is_file() else None
        if reason is not None:
            raise T2VError(f"{reason.replace('not shipped; ', '')}, or delete onnx/denoiser.int8*.onnx to build without INT8")
