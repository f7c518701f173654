"""One INT8 accuracy budget: `make compare` gates the videos with the quantize gate's own numbers."""

from __future__ import annotations

from t2vtrt.build.compare.tolerances import adherence_max_drop, diffusers_thresholds, load_tolerances, video_thresholds
from t2vtrt.calibration.gate import load_thresholds


def test_compare_and_the_quantize_gate_share_one_int8_budget() -> None:
    """Worst frame, SSIM and adherence drop in tolerances.toml equal thresholds.json's default (the design's budget)."""
    tolerances, budget = load_tolerances(), load_thresholds("default")
    assert (budget.video_psnr_min_db, budget.video_ssim_min, budget.adherence_max_drop) == (28.0, 0.9, 0.02)
    for precision in ("int8", "int8-qdq"):
        for video in (video_thresholds(tolerances, precision), diffusers_thresholds(tolerances, precision)):
            assert video is not None  # vs FP32 and vs diffusers alike (FP32 is within a uint8 level of diffusers)
            assert video["psnr_min"] == budget.video_psnr_min_db and video["ssim_min"] == budget.video_ssim_min
    assert adherence_max_drop(tolerances) == budget.adherence_max_drop


def test_no_model_lowers_the_video_budget() -> None:
    """Per-model entries may tighten the denoiser limits but never loosen the video budget (a gate, not a measurement)."""
    import json

    from t2vtrt.calibration.gate import THRESHOLDS_FILE

    data = json.loads(THRESHOLDS_FILE.read_text())
    default = load_thresholds("default")
    for name in (k for k in data if not k.startswith("_") and k != "default"):
        limits = load_thresholds(name)
        assert limits.video_psnr_min_db >= default.video_psnr_min_db and limits.video_ssim_min >= default.video_ssim_min
        assert limits.adherence_max_drop <= default.adherence_max_drop
        assert limits.denoiser_rel_l2_max <= default.denoiser_rel_l2_max
        assert limits.denoiser_cosine_min >= default.denoiser_cosine_min
