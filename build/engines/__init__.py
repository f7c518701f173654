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
        print(f"note: this machine's GPU matches profile {profile} but TensorRT is not installed, so auto builds "
              f"the cpu target; for engines: pip install -e '.[gpu]' and pass --gpu {profile}", file=sys.stderr)
        return "cpu"
    return profile


def build_engines(paths: ArtifactPaths, target: str, quiet: bool = False, dry_run: bool = False, low_vram: bool = False,
                  version_compatible: bool = False, hardware_compat: str | None = None) -> Path:
    """Build engines/<target>/ and return its manifest path (plan.json for a GPU target's dry run)."""
    if target == "cpu":
        from t2vtrt.build.engines.cpu import build_cpu_target

        if dry_run or version_compatible or hardware_compat:
            from t2vtrt.runtime.errors import T2VError

            raise T2VError("--dry-run, --version-compatible and --hardware-compat apply to GPU targets: pass --gpu <profile> (see `t2vtrt gpus`)")
        return build_cpu_target(paths)  # --low-vram is a runtime choice there: nothing to plan
    from t2vtrt.build.engines.tensorrt import build_gpu_target

    return build_gpu_target(paths, target, quiet=quiet, dry_run=dry_run, low_vram=low_vram,
                            version_compatible=version_compatible, hardware_compat=hardware_compat)
