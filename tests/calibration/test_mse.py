"""MSE calibration: the amax minimising expected INT8 error, checked against a brute-force quantizer."""

from __future__ import annotations

import numpy as np

from t2vtrt.calibration.mse import mse_amax, quantization_mse
from t2vtrt.calibration.ranges import abs_histogram


def _real_mse(x: np.ndarray, amax: float) -> float:
    """Mean squared error of symmetric INT8 fake quantization of x at amax (round to nearest, clip)."""
    scale = amax / 127.0
    return float(np.mean((np.clip(np.round(x / scale), -127, 127) * scale - x) ** 2))


def test_histogram_estimate_tracks_the_real_error() -> None:
    """The histogram's expected MSE matches fake quantization's within 15 % across clipping points."""
    x = np.random.default_rng(0).standard_normal(200_000).astype(np.float32)
    absmax = float(np.abs(x).max())
    errors = quantization_mse(abs_histogram(x, absmax, 2048), absmax)
    for bin_index in (400, 800, 1200, 2047):
        amax = (bin_index + 1) * absmax / 2048
        assert abs(errors[bin_index] - _real_mse(x, amax)) <= 0.15 * _real_mse(x, amax)


def test_mse_amax_beats_max_and_extreme_clipping_on_a_heavy_tail() -> None:
    """Gaussian bulk + rare large outliers: the chosen amax has a lower real error than max or a 4-sigma clip."""
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.standard_normal(100_000), rng.uniform(20, 40, 50) * rng.choice([-1, 1], 50)]).astype(np.float32)
    absmax = float(np.abs(x).max())
    amax = mse_amax(abs_histogram(x, absmax, 2048), absmax)
    assert 4.0 < amax < absmax
    assert _real_mse(x, amax) < _real_mse(x, absmax) and _real_mse(x, amax) < _real_mse(x, 4.0)


def test_no_clipping_when_nothing_is_rare() -> None:
    """A uniform distribution has no tail worth clipping: the amax stays at (nearly) the max."""
    x = np.random.default_rng(2).uniform(-1, 1, 100_000).astype(np.float32)
    absmax = float(np.abs(x).max())
    assert mse_amax(abs_histogram(x, absmax, 2048), absmax) >= 0.97 * absmax


def test_empty_and_zero_tensors() -> None:
    """All-zero tensors keep amax 0 (the scale code floors it)."""
    assert mse_amax(np.zeros(2048), 0.0) == 0.0
    assert mse_amax(np.zeros(2048), 1.0) == 1.0
