"""The bench report: ratios from the per-process figures, video agreement with FP32, stage times from the build logs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from t2vtrt.build.artifacts import ArtifactPaths
from t2vtrt.build.bench.run import markdown, stage_seconds, summarize
from t2vtrt.build.stage_record import record_stage


def side(total: float, **extra: float) -> dict[str, float]:
    """One worker's figures."""
    return {"total_s": total, "import_s": 0.02, "peak_rss_mb": 300.0, "loop_overhead_fraction": 0.01, **extra}


def test_summarize_ratios_and_video_agreement(tmp_path: Path) -> None:
    """Speedups are ratios of the same run's totals; an identical video is capped, a perturbed one is not."""
    rng = np.random.default_rng(0)
    fp32 = rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    noisy = np.clip(fp32.astype(int) + rng.integers(-3, 4, fp32.shape), 0, 255).astype(np.uint8)
    for name, video in (("fp32", fp32), ("int8", noisy), ("diffusers", fp32)):
        np.save(tmp_path / f"{name}.npy", video)
    sides = {"diffusers": side(6.0), "fp32": side(3.0), "int8": side(2.0)}
    report = summarize("tiny", {"steps": 3}, sides, tmp_path)
    assert report["runtime_vs_diffusers_speedup"] == 2.0
    assert report["int8_vs_fp32_speedup"] == 1.5 and report["int8_vs_diffusers_speedup"] == 3.0
    assert report["video_vs_fp32"]["diffusers"]["ssim_min"] == 1.0
    int8 = report["video_vs_fp32"]["int8"]
    assert 35.0 < int8["psnr_min_db"] <= int8["psnr_mean_db"] < 60.0 and int8["ssim_min"] < 1.0
    assert "| int8 | 2.00 |" in markdown(report)
    json.dumps(report)  # the report is plain JSON


def test_stage_seconds_reads_the_build_logs(tmp_path: Path) -> None:
    """Calibration's wall time reaches the bench report through logs/<stage>.json."""
    paths = ArtifactPaths(tmp_path / "tiny")
    record_stage(paths.root, "2b-calibrate", 61.5, [])
    record_stage(paths.root, "2c-quantize", 47.25, [])
    assert stage_seconds(paths) == {"2b-calibrate": 61.5, "2c-quantize": 47.25}
