"""Per-output accuracy metrics between two runners' results, computed by polygraphy's compare functions."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

# Identical outputs have an infinite PSNR; JSON has no infinity, so it is reported as this cap.
PSNR_CAP_DB = 200.0


def _compare_funcs() -> list[Any]:
    """polygraphy's functors for max |diff|, L2 distance, cosine similarity and PSNR (their verdicts are unused)."""
    from polygraphy.comparator import CosineSimilarityCompareFunc, L2CompareFunc, PsnrCompareFunc, SimpleCompareFunc

    # The thresholds here only decide polygraphy's own log lines; our gate reads the metric values.
    return [SimpleCompareFunc(check_error_stat="max"), L2CompareFunc(), CosineSimilarityCompareFunc(), PsnrCompareFunc()]


def compare_runners(results: Any, reference: str, candidate: str) -> list[dict[str, dict[str, float]]]:
    """Per iteration, per output of `reference`: rel_l2, max_abs, cosine, psnr of `candidate` against it."""
    from polygraphy.comparator import Comparator
    from polygraphy.logger import G_LOGGER

    names = list(results.keys())
    pair = (names.index(reference), names.index(candidate))
    with G_LOGGER.verbosity(G_LOGGER.CRITICAL):  # per-output logs belong in our report, not on stdout
        accuracy = Comparator.compare_accuracy(results, comparisons=[pair], compare_func=_compare_funcs())
    per_func = [result[(reference, candidate)] for result in accuracy]
    iterations = []
    for index, ref_iteration in enumerate(results[reference]):
        values: dict[str, dict[str, float]] = {}
        for output, ref_array in ref_iteration.items():
            merged: dict[str, Any] = {}
            for func_iterations in per_func:
                merged.update(func_iterations[index][output].metric_values())
            values[output] = _named(merged, np.asarray(ref_array))
        iterations.append(values)
    return iterations


def _named(values: dict[str, Any], reference: np.ndarray) -> dict[str, float]:
    """Our four metrics from polygraphy's fields: relative L2 is its L2 distance over the reference's norm."""
    ref_norm = float(np.linalg.norm(reference.astype(np.float64)))
    l2 = float(values["l2_norm"])
    return {
        "rel_l2": l2 / ref_norm if ref_norm > 0 else (0.0 if l2 == 0 else math.inf),
        "max_abs": float(values["max_absdiff"]),
        "cosine": float(values["cosine_similarity"]),
        "psnr": min(float(values["psnr"]), PSNR_CAP_DB),
    }


def worst(iterations: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Per output, the worst value of each metric over the iterations (the gate checks the worst case)."""
    out: dict[str, dict[str, float]] = {}
    for values in iterations:
        for output, metrics in values.items():
            seen = out.setdefault(output, dict(metrics))
            for metric, value in metrics.items():
                pick = min if metric in ("cosine", "psnr") else max
                if math.isnan(seen[metric]):
                    continue  # NaN is the worst value, whichever way the metric goes
                seen[metric] = value if math.isnan(value) else pick(seen[metric], value)
    return out


def nonfinite_counts(iterations: list[Any]) -> dict[str, int]:
    """Per output, how many NaN/Inf values a runner produced over all iterations."""
    counts: dict[str, int] = {}
    for iteration in iterations:
        for output, array in iteration.items():
            array = np.asarray(array)
            bad = int(array.size - np.isfinite(array).sum()) if array.dtype.kind == "f" else 0
            counts[output] = counts.get(output, 0) + bad
    return counts


def validate_finite(results: Any, runner: str) -> bool:
    """polygraphy's NaN/Inf validation of one runner's outputs."""
    from polygraphy.comparator import Comparator, RunResults
    from polygraphy.logger import G_LOGGER

    single = RunResults([(runner, results[runner])])
    with G_LOGGER.verbosity(G_LOGGER.CRITICAL):
        return bool(Comparator.validate(single, check_inf=True, check_nan=True))
