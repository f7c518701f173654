"""The tiny model calibrated and quantized once, in a private copy of the session's tiny artifacts."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from t2vtrt.build.artifacts import ArtifactPaths

# Smaller than budgets.json's 'tiny' so the whole module stays well inside its time budget; the placement
# sees cropped shapes (tool_frames), so every structure and gate check covers that path.
TEST_BUDGET = {
    "prompts": 8,
    "samples": 32,
    "eval_prompts": 2,
    "eval_samples": 8,
    "sweep_samples": 4,
    "video_prompts": 1,
    "tool_frames": 2,
}


def small_budget() -> Any:
    """budgets.json's tiny budget shrunk for tests."""
    from t2vtrt.calibration.settings import load_budget

    return load_budget("tiny").with_overrides(**TEST_BUDGET)


def copy_artifacts(paths: ArtifactPaths, dst_root: Path) -> ArtifactPaths:
    """A private copy of a model's onnx/ (and calib/ when present)."""
    dst = ArtifactPaths(dst_root / paths.root.name)
    for folder in ("onnx", "calib"):
        if (paths.root / folder).is_dir():
            shutil.copytree(paths.root / folder, dst.root / folder)
    return dst


@pytest.fixture(scope="session")
def calibrated(tiny_paths: ArtifactPaths, tmp_path_factory: pytest.TempPathFactory) -> tuple[ArtifactPaths, dict, dict]:
    """(paths, calibrate summary, quantize report) of the tiny model; the session's tiny_paths stay untouched."""
    from t2vtrt.calibration.stage import run_calibrate, run_quantize

    paths = copy_artifacts(tiny_paths, tmp_path_factory.mktemp("calibrated"))
    summary = run_calibrate(paths, budget=small_budget())
    report = run_quantize(paths, budget=small_budget())
    return paths, summary, report
