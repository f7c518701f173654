"""The metric pieces on synthetic arrays: frame PSNR/SSIM, polygraphy-backed graph metrics, gates, regressions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from t2vtrt.build.compare.frames import psnr_per_frame, ssim_per_frame
from t2vtrt.build.compare.gates import FAILED, PASSED, Check, gate_graph
from t2vtrt.build.compare.metrics import PSNR_CAP_DB, compare_runners, worst
from t2vtrt.build.compare.tolerances import load_tolerances
from t2vtrt.build.nightly.history import regressions, speed_figures


def _video(seed: int, noise: float = 0.0) -> np.ndarray:
    """A random (3, 32, 32, 3) uint8 clip, optionally with added noise."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (3, 32, 32, 3)).astype(np.float64)
    return np.clip(base + noise * rng.standard_normal(base.shape), 0, 255).astype(np.uint8)


def test_frame_psnr_and_ssim() -> None:
    clean = _video(0)
    assert np.all(psnr_per_frame(clean, clean) == PSNR_CAP_DB)
    assert np.allclose(ssim_per_frame(clean, clean), 1.0)
    slightly, badly = _video(0, 2.0), _video(0, 40.0)
    assert np.all(psnr_per_frame(clean, slightly) > psnr_per_frame(clean, badly) + 10)
    assert np.all(ssim_per_frame(clean, slightly) > ssim_per_frame(clean, badly))
    assert psnr_per_frame(clean, badly).shape == (3,)


def test_graph_metrics_come_from_polygraphy_compare_funcs() -> None:
    from polygraphy.comparator import IterationResult, RunResults

    ref = np.linspace(-1, 1, 1000, dtype=np.float32).reshape(10, 100)
    close = ref + np.float32(1e-3)
    results = RunResults([("ref", [IterationResult({"y": ref}, runner_name="ref")]), ("cand", [IterationResult({"y": close}, runner_name="cand")])])
    (metrics,) = compare_runners(results, "ref", "cand")
    y = metrics["y"]
    assert y["rel_l2"] == pytest.approx(np.linalg.norm(close - ref) / np.linalg.norm(ref), rel=1e-4)
    assert y["max_abs"] == pytest.approx(1e-3, rel=1e-3)
    assert 0.99999 < y["cosine"] <= 1.0 and 55 < y["psnr"] < 65


def test_worst_keeps_nan_and_the_worst_direction() -> None:
    iters = [
        {"y": {"rel_l2": 0.1, "max_abs": 1.0, "cosine": 0.99, "psnr": 40.0}},
        {"y": {"rel_l2": 0.2, "max_abs": 0.5, "cosine": float("nan"), "psnr": 30.0}},
        {"y": {"rel_l2": 0.05, "max_abs": 0.1, "cosine": 0.999, "psnr": 50.0}},
    ]
    y = worst(iters)["y"]
    assert (y["rel_l2"], y["max_abs"], y["psnr"]) == (0.2, 1.0, 30.0) and math.isnan(y["cosine"])


def test_gate_names_component_metric_and_threshold() -> None:
    metrics = {"noise_pred": {"rel_l2": 0.3, "max_abs": 0.1, "cosine": 0.99, "psnr": 30.0}}
    thresholds = {"rel_l2": 0.2, "cosine": 0.9}
    check = gate_graph(Check("graph", "denoiser int8", "int8"), metrics, {"noise_pred": 0}, thresholds)
    assert check.status == FAILED
    assert check.failures == ["denoiser int8: rel_l2 0.3 > threshold 0.2 (output 'noise_pred')"]
    nan = gate_graph(
        Check("graph", "denoiser int8", "int8"), {"noise_pred": {**metrics["noise_pred"], "rel_l2": float("nan")}}, {"noise_pred": 7}, {"rel_l2": 1.0}
    )
    assert nan.failures[0] == "denoiser int8: output 'noise_pred' has 7 NaN/Inf values"
    ok = gate_graph(Check("graph", "denoiser int8", "int8"), metrics, {"noise_pred": 0}, {"rel_l2": 0.5})
    assert ok.status == PASSED
    ungated = gate_graph(Check("graph", "denoiser fp8", "fp8"), metrics, {"noise_pred": 0}, None)
    assert ungated.status == FAILED and "[graph.denoiser.fp8]" in ungated.failures[0]


def test_regressions_against_the_last_good_night() -> None:
    rules = load_tolerances()["regression"]
    good = {
        "accuracy": {
            "graph": {"denoiser/fp32": {"psnr": 140.0}, "denoiser/int8": {"psnr": 24.0}},
            "video": {"fp32": {"psnr_mean": 150.0}, "int8": {"psnr_mean": 26.0}},
        },
        "speed": speed_figures({"sides": {"fp32": {"total_s": 1.0}}, "int8_vs_fp32_speedup": 2.0, "settings": {"steps": 10}}),
    }
    same = {
        "accuracy": {
            "graph": {"denoiser/fp32": {"psnr": 120.0}, "denoiser/int8": {"psnr": 20.0}},  # fp32 above the floor
            "video": {"fp32": {"psnr_mean": 110.0}, "int8": {"psnr_mean": 24.0}},
        },
        "speed": {"sides/fp32/total_s": 1.2, "int8_vs_fp32_speedup": 1.8, "settings/steps": 20.0},
    }
    assert regressions(same, good, rules) == []
    worse = {
        "accuracy": {"graph": {"denoiser/int8": {"psnr": 10.0}}, "video": {"int8": {"psnr_mean": 22.0}}},
        "speed": {"sides/fp32/total_s": 1.5, "int8_vs_fp32_speedup": 1.0},
    }
    found = regressions(worse, good, rules)
    assert [f.split(":")[0] for f in found] == ["video int8", "graph denoiser/int8", "bench int8_vs_fp32_speedup", "bench sides/fp32/total_s"]
    assert regressions(worse, None, rules) == []
