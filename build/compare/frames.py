"""End-to-end video metrics per frame: PSNR and SSIM on uint8 RGB frames (a small numpy SSIM)."""

from __future__ import annotations

import numpy as np

from t2vtrt.build.compare.metrics import PSNR_CAP_DB

PEAK = 255.0
# SSIM as in Wang et al. 2004 (and scikit-image's gaussian_weights=True): 11-tap gaussian, sigma 1.5.
_K1, _K2, _SIGMA, _RADIUS = 0.01, 0.03, 1.5, 5


def psnr_per_frame(reference: np.ndarray, test: np.ndarray) -> np.ndarray:
    """PSNR in dB of each frame of `test` against `reference`, (F, H, W, 3) uint8 videos, capped at PSNR_CAP_DB.

    The one PSNR of videos: compare's gates, calibration's INT8 gate and the bench read it."""
    _check_pair(reference, test)
    diff = reference.astype(np.float64) - test.astype(np.float64)
    mse = (diff**2).reshape(len(diff), -1).mean(axis=1)
    with np.errstate(divide="ignore"):
        psnr = 10.0 * np.log10(PEAK**2 / mse)
    return np.minimum(psnr, PSNR_CAP_DB)


def ssim_per_frame(reference: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Mean SSIM of each frame, averaged over the RGB channels."""
    _check_pair(reference, test)
    return np.array([np.mean([_ssim(r[..., c], t[..., c]) for c in range(r.shape[-1])]) for r, t in zip(reference, test)])


def _check_pair(reference: np.ndarray, test: np.ndarray) -> None:
    """Both videos must be (F, H, W, C) of one shape."""
    if reference.shape != test.shape or reference.ndim != 4:
        raise ValueError(f"videos must be (F, H, W, C) arrays of one shape, got {reference.shape} and {test.shape}")


def _ssim(x: np.ndarray, y: np.ndarray) -> float:
    """SSIM of two single-channel images, gaussian-weighted, over the valid (unpadded) region."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    c1, c2 = (_K1 * PEAK) ** 2, (_K2 * PEAK) ** 2
    mu_x, mu_y = _blur(x), _blur(y)
    var_x = _blur(x * x) - mu_x**2
    var_y = _blur(y * y) - mu_y**2
    cov = _blur(x * y) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return float(ssim_map.mean())


def _blur(image: np.ndarray) -> np.ndarray:
    """Separable gaussian filter, 'valid' mode (frames smaller than the window fall back to their mean)."""
    taps = np.exp(-0.5 * (np.arange(-_RADIUS, _RADIUS + 1) / _SIGMA) ** 2)
    taps /= taps.sum()
    if min(image.shape) < len(taps):
        return np.full((1, 1), image.mean())
    windows = np.lib.stride_tricks.sliding_window_view
    rows = windows(image, len(taps), axis=0) @ taps  # (H', W): filtered down the columns
    return windows(rows, len(taps), axis=1) @ taps
