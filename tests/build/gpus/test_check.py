"""`t2vtrt gpus` and `t2vtrt gpu-check` on a machine without a GPU, and gpu-check's comparison helpers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from t2vtrt.build.gpus import check, detect
from t2vtrt.build.gpus.profiles import PRECISIONS
from t2vtrt.cli import cli


@pytest.fixture()
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Detection finds nothing."""
    monkeypatch.setattr(detect, "_from_nvml", lambda: None)
    monkeypatch.setattr(detect.shutil, "which", lambda name: None)


def test_gpus_lists_profiles(no_gpu: None) -> None:
    """One line per profile plus where they live; no GPU detected."""
    result = CliRunner().invoke(cli, ["gpus"])
    assert result.exit_code == 0, result.output
    assert "rtx3060" in result.output and "sm86" in result.output and "detected: no NVIDIA GPU" in result.output


def test_gpus_resolve(no_gpu: None) -> None:
    """`gpus --resolve auto` is cpu without a GPU (what the Makefile's GPU=auto uses); names pass through."""
    runner = CliRunner()
    assert runner.invoke(cli, ["gpus", "--resolve", "auto"]).output.strip() == "cpu"
    assert runner.invoke(cli, ["gpus", "--resolve", "h100"]).output.strip() == "h100"


def test_gpu_check_without_gpu_fails_at_the_first_step(no_gpu: None, tmp_path: Path) -> None:
    """Exit 1 with one FAIL line naming the missing GPU; nothing is built."""
    result = CliRunner().invoke(cli, ["gpu-check", "--artifacts", str(tmp_path)])
    assert result.exit_code == 1
    assert result.output.strip() == "FAIL  detect GPU: T2VError: no NVIDIA GPU found (NVML and nvidia-smi see none): gpu-check needs one"
    assert list(tmp_path.iterdir()) == []


def test_tolerances_cover_every_precision() -> None:
    """Each precision a profile may list has a tolerance, looser as precision drops."""
    tolerances = check.load_tolerances()
    assert set(tolerances) == set(PRECISIONS)
    assert tolerances["fp32"]["max_rel_l2"] < tolerances["fp16"]["max_rel_l2"] < tolerances["int8"]["max_rel_l2"]


def test_compare_metrics_and_within() -> None:
    """Relative L2, max abs and cosine against hand values."""
    reference = np.array([3.0, 4.0], np.float32)
    metrics = check.compare_metrics(np.array([3.0, 4.5], np.float32), reference)
    assert metrics["rel_l2"] == pytest.approx(0.1) and metrics["max_abs"] == pytest.approx(0.5)
    assert metrics["cosine"] == pytest.approx((9 + 18) / (5 * np.hypot(3, 4.5)))
    assert check.within(check.compare_metrics(reference, reference), {"max_rel_l2": 0.0, "min_cosine": 1.0 - 1e-12})
    assert not check.within(metrics, {"max_rel_l2": 0.05, "min_cosine": 0.9})


def test_sample_feeds_follow_the_spec() -> None:
    """Opt shapes, dtypes and value ranges of a manifest component."""
    spec = {"axes": {"batch": [1, 2, 4], "seq": [77, 77, 77]},
            "inputs": [{"name": "ids", "dtype": "int32", "shape": ["batch", "seq"], "value_range": [0, 9]},
                       {"name": "t", "dtype": "float32", "shape": ["batch"], "value_range": [0, 999]},
                       {"name": "x", "dtype": "float32", "shape": ["batch", 4]}]}
    feeds = check.sample_feeds(spec)
    assert feeds["ids"].shape == (2, 77) and feeds["ids"].dtype == np.int32 and 0 <= feeds["ids"].min() <= feeds["ids"].max() <= 9
    assert feeds["t"].shape == (2,) and (0 <= feeds["t"]).all() and (feeds["t"] <= 999).all()
    assert feeds["x"].shape == (2, 4) and feeds["x"].dtype == np.float32
