"""Entropy calibration: the fast KL search equals the plain per-candidate definition, and it clips outliers."""

from __future__ import annotations

import numpy as np
import pytest

from t2vtrt.calibration.entropy import entropy_amax, entropy_threshold_bin, kl_divergences
from t2vtrt.calibration.ranges import TensorRange, abs_histogram, differing


def reference_kl(counts: np.ndarray, i: int, levels: int) -> float:
    """KL(P||Q) for clipping at bin i, written out the way TensorRT's calibrator describes it."""
    counts = counts.astype(np.float64)
    ref = counts[:i]
    p = ref.copy()
    p[-1] += counts[i:].sum()
    level = (np.arange(i) * levels) // i
    nonzero = ref > 0
    level_sum = np.bincount(level, weights=ref, minlength=levels)
    level_count = np.bincount(level, weights=nonzero, minlength=levels)
    q = np.where(nonzero, level_sum[level] / np.maximum(level_count[level], 1), 0.0)
    mask = p > 0
    if np.any(q[mask] == 0):
        return float("inf")
    pn, qn = p[mask] / p.sum(), q[mask] / q.sum()
    return float(np.sum(pn * np.log(pn / qn)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_kl_matches_the_definition(seed: int) -> None:
    """Every candidate's divergence (and infinities) agree with the per-bin definition."""
    rng = np.random.default_rng(seed)
    x = np.abs(rng.standard_normal(20_000) * rng.uniform(0.1, 3))
    x[: 3 * seed] *= 12  # a few outliers
    x[rng.random(x.size) < 0.3 * seed] = 0
    counts = abs_histogram(x, float(x.max()), 512)
    candidates = np.arange(64, 513)
    fast = kl_divergences(counts, 64, candidates)
    slow = np.array([reference_kl(counts, i, 64) for i in candidates])
    assert np.array_equal(np.isfinite(fast), np.isfinite(slow))
    finite = np.isfinite(slow)
    np.testing.assert_allclose(fast[finite], slow[finite], atol=1e-9)


def test_entropy_clips_rare_outliers() -> None:
    """A Gaussian with a few 10x outliers: entropy's amax sits well inside the max."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(100_000)
    x[:5] *= 10
    absmax = float(np.abs(x).max())
    amax = entropy_amax(abs_histogram(x, absmax, 2048), absmax, 128)
    assert 2.0 < amax < 0.8 * absmax


def test_as_many_bins_as_levels_degenerates_to_max() -> None:
    """onnxruntime's default (128 bins for 128 levels) has a single candidate: the whole range."""
    counts = abs_histogram(np.random.default_rng(0).standard_normal(10_000), 4.5, 128)
    assert entropy_threshold_bin(counts, 128) == 128


def test_empty_histogram_and_zero_range() -> None:
    """No data keeps the full range; a tensor that is always 0 keeps amax 0."""
    assert entropy_threshold_bin(np.zeros(2048), 128) == 2048
    assert entropy_amax(np.zeros(2048), 0.0) == 0.0


def test_abs_histogram_counts_everything() -> None:
    """Every value lands in a bin; the max lands in the last one."""
    values = np.array([-3.0, -1.0, 0.0, 0.5, 3.0], dtype=np.float32)
    counts = abs_histogram(values, 3.0, 6)
    assert counts.sum() == 5 and counts[-1] == 2 and counts[0] == 1


def test_asymmetric_range_and_differing() -> None:
    """uint8 ranges clip the symmetric amax to what was seen; `differing` counts entropy != max."""
    r = TensorRange(min=-0.3, max=9.0, entropy_amax=6.0, mse_amax=7.5)
    assert r.asymmetric("entropy") == (-0.3, 6.0)
    assert r.asymmetric("max") == (-0.3, 9.0)
    assert r.asymmetric("mse") == (-0.3, 7.5)
    assert differing({"a": r, "b": TensorRange(-1.0, 2.0, 2.0, 2.0)}) == 1
