"""The engines stage: build a target directory for `cpu` or a GPU profile."""

from __future__ import annotations

from pathlib import Path

from t2vtrt.build.artifacts import ArtifactPaths


def resolve_target(gpu: str) -> str:
    """`auto` -> the detected GPU's profile, or `cpu` when no CUDA device exists."""
    if gpu != "auto":
        return gpu
    try:
        from t2vtrt.build.gpus.detect import auto_profile
    except ImportError:
        return "cpu"
    return auto_profile() or "cpu"


def build_engines(paths: ArtifactPaths, target: str, quiet: bool = False) -> Path:
    """Build engines/<target>/ and return its manifest path."""
    if target == "cpu":
        from t2vtrt.build.engines.cpu import build_cpu_target

        return build_cpu_target(paths)
    from t2vtrt.build.engines.tensorrt import build_gpu_target

    return build_gpu_target(paths, target, quiet=quiet)
