"""MSE calibration: the clipping amax that minimises a tensor's expected INT8 quantization error.

From the same |x| histogram the entropy search uses (bins of width w over [0, absmax], centers c_j): for a
candidate amax a with step s = a / 127, values inside [0, a] cost the rounding error s^2 / 12 each, values
beyond it the clipping error (c_j - a)^2. Unlike KL divergence, which matches the shape of the distribution
and so clips rare large activations hard, this weighs a clipped outlier by how far it is clipped: trained
models carry information in those outliers (measured on the shapes model: docs/benchmarks.md).
"""

from __future__ import annotations

import numpy as np


def quantization_mse(counts: np.ndarray, absmax: float, levels: int = 127) -> np.ndarray:
    """Expected squared error per element for amax = each bin's upper edge (index i -> amax (i + 1) w)."""
    n = np.asarray(counts, dtype=np.float64)
    width = absmax / n.size
    centers = (np.arange(n.size) + 0.5) * width
    amax = (np.arange(n.size) + 1.0) * width
    # Suffix sums over the bins beyond each candidate: count, sum of c, sum of c^2.
    tail_n = np.concatenate([np.cumsum(n[::-1])[::-1][1:], [0.0]])
    tail_c = np.concatenate([np.cumsum((n * centers)[::-1])[::-1][1:], [0.0]])
    tail_c2 = np.concatenate([np.cumsum((n * centers**2)[::-1])[::-1][1:], [0.0]])
    inside = n.sum() - tail_n
    clipped = tail_c2 - 2.0 * amax * tail_c + amax**2 * tail_n
    return (inside * (amax / levels) ** 2 / 12.0 + clipped) / max(n.sum(), 1.0)


def mse_amax(counts: np.ndarray, absmax: float, levels: int = 127) -> float:
    """The amax with the smallest expected quantization MSE (the largest on ties: less clipping)."""
    if absmax <= 0 or np.asarray(counts).sum() == 0:
        return float(absmax)
    errors = quantization_mse(counts, absmax, levels)
    best = np.flatnonzero(errors <= errors.min() * (1 + 1e-12))[-1]
    return float((best + 1) * absmax / len(errors))
