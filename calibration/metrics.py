"""Accuracy numbers of a quantized output against its FP32 reference."""

from __future__ import annotations

import numpy as np


def rel_l2(x: np.ndarray, ref: np.ndarray) -> float:
    """||x - ref|| / ||ref|| over all elements."""
    x, ref = np.asarray(x, np.float64), np.asarray(ref, np.float64)
    return float(np.linalg.norm(x - ref) / max(np.linalg.norm(ref), 1e-30))


def cosine(x: np.ndarray, ref: np.ndarray) -> float:
    """Cosine similarity of the flattened tensors."""
    x, ref = np.asarray(x, np.float64).ravel(), np.asarray(ref, np.float64).ravel()
    return float(x @ ref / max(np.linalg.norm(x) * np.linalg.norm(ref), 1e-30))


def max_abs(x: np.ndarray, ref: np.ndarray) -> float:
    """Largest absolute difference."""
    return float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(ref, np.float64))))


def denoiser_metrics(x: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """rel_l2, cosine and max_abs of a denoiser output against FP32."""
    return {"rel_l2": rel_l2(x, ref), "cosine": cosine(x, ref), "max_abs": max_abs(x, ref)}
