"""Entropy (KL-divergence) calibration: TensorRT's EntropyCalibration2 algorithm over |x| histograms.

For each candidate clipping bin i (num_quantized_bins <= i <= num_bins) the reference distribution P is
the histogram's first i bins with everything beyond folded into the last one; Q is those i bins merged
into num_quantized_bins levels and spread back evenly over P's non-empty bins. The threshold with the
smallest KL(P || Q) becomes the tensor's amax. With enough bins (2048 vs 128 levels) this clips rare
outliers; with as many bins as levels it degenerates to max calibration.

KL is evaluated for all candidates at once from prefix sums, per quantization level rather than per bin:
    KL = (sum p log p - T log T + T log(T - tail) - sum_k mass_k log avg_k) / T
where T is the total count, tail the count beyond bin i, and avg_k the mean count of level k's
non-empty bins (the last level also carries the tail).
"""

from __future__ import annotations

import numpy as np


def _xlogx(values: np.ndarray) -> np.ndarray:
    """x log x with 0 log 0 = 0."""
    values = np.asarray(values, dtype=np.float64)
    return np.where(values > 0, values * np.log(np.where(values > 0, values, 1.0)), 0.0)


def kl_divergences(counts: np.ndarray, levels: int, candidates: np.ndarray) -> np.ndarray:
    """KL(P || Q) for each candidate clipping bin count; inf where Q misses mass that P has."""
    c = np.asarray(counts, dtype=np.float64)
    total = c.sum()
    cum = np.concatenate([[0.0], np.cumsum(c)])
    cum_nonzero = np.concatenate([[0.0], np.cumsum(c > 0)])
    cum_clogc = np.concatenate([[0.0], np.cumsum(_xlogx(c))])
    i = np.asarray(candidates, dtype=np.int64)[:, None]
    bounds = (np.arange(levels + 1)[None, :] * i + levels - 1) // levels  # level k = bins [bounds_k, bounds_k+1)
    mass = cum[bounds[:, 1:]] - cum[bounds[:, :-1]]
    filled = cum_nonzero[bounds[:, 1:]] - cum_nonzero[bounds[:, :-1]]
    log_avg = np.where(mass > 0, np.log(np.where(mass > 0, mass, 1.0) / np.maximum(filled, 1.0)), 0.0)
    i = i[:, 0]
    tail = total - cum[i]
    last = c[i - 1]
    sum_plogp = cum_clogc[i - 1] + _xlogx(last + tail)
    sum_plogq = (mass * log_avg).sum(axis=1) + tail * log_avg[:, -1]
    kept = total - tail
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = (sum_plogp - total * np.log(total) + total * np.log(kept) - sum_plogq) / total
    kl[(tail > 0) & (last == 0)] = np.inf  # the clipped mass lands in an empty bin Q gives nothing
    kl[kept <= 0] = np.inf
    return np.maximum(kl, 0.0)  # rounding can leave -1e-12 for a perfect match


def entropy_threshold_bin(counts: np.ndarray, levels: int = 128) -> int:
    """The bin count i (levels <= i <= len(counts)) whose clipping minimises KL divergence."""
    counts = np.asarray(counts, dtype=np.float64)
    if counts.sum() == 0 or counts.size <= levels:
        return counts.size
    candidates = np.arange(levels, counts.size + 1)
    divergences = kl_divergences(counts, levels, candidates)
    return int(candidates[int(np.argmin(divergences))])  # argmin keeps the smallest on ties: deterministic


def entropy_amax(counts: np.ndarray, absmax: float, levels: int = 128) -> float:
    """The entropy-calibrated amax of a tensor whose |x| histogram over [0, absmax] is `counts`."""
    if absmax <= 0:
        return float(absmax)
    return float(absmax) * entropy_threshold_bin(counts, levels) / len(counts)
