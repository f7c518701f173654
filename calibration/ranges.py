"""Per-tensor activation ranges from captured data: observed min/max (max calibration) and entropy amax."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from t2vtrt.calibration.entropy import entropy_amax
from t2vtrt.calibration.mse import mse_amax
from t2vtrt.calibration.graphs import batches, session
from t2vtrt.calibration.stats_graph import histogram_graph, minmax_graph, sample_stride
from t2vtrt.runtime.backends import Feeds
from t2vtrt.runtime.errors import T2VError
from t2vtrt.runtime.files import write_json

METHODS = ("entropy", "max", "mse")
RANGE_FIELDS = 2  # what each range holds (2: min, max, entropy_amax, mse_amax): older ranges.json are recomputed


@dataclass(frozen=True)
class TensorRange:
    """What calibration learned about one activation tensor."""

    min: float
    max: float
    entropy_amax: float
    mse_amax: float

    @property
    def absmax(self) -> float:
        """Max calibration's amax."""
        return max(abs(self.min), abs(self.max))

    def amax(self, method: str) -> float:
        """The symmetric amax under a calibration method (the signed INT8 graphs use it)."""
        check_method(method)
        return {"entropy": self.entropy_amax, "mse": self.mse_amax}.get(method, self.absmax)

    def asymmetric(self, method: str) -> tuple[float, float]:
        """(rmin, rmax) for uint8 activations: the symmetric amax clipped to what was observed."""
        amax = self.amax(method)
        return min(0.0, max(self.min, -amax)), max(0.0, min(self.max, amax))


def check_method(method: str) -> None:
    """A one-line error for an unknown calibration method."""
    if method not in METHODS:
        raise T2VError(f"unknown calibration method {method!r}: choose one of {', '.join(METHODS)}")


def float_activations(model: Any, op_types: tuple[str, ...] = ("Conv", "MatMul", "Gemm")) -> list[str]:
    """Non-constant inputs and the outputs of the given op types (what the U8S8 variant quantizes), in graph order."""
    from t2vtrt.calibration.qdq import constant_tensors

    constants = constant_tensors(model)
    seen: dict[str, None] = {}
    for node in model.graph.node:
        if node.op_type in op_types:
            for name in (*node.input, *node.output):
                if name and name not in constants:
                    seen[name] = None
    return list(seen)


def abs_histogram(values: np.ndarray, absmax: float, num_bins: int) -> np.ndarray:
    """Counts of |values| in num_bins equal bins over [0, absmax] (absmax itself in the last bin)."""
    scaled = np.abs(np.asarray(values, dtype=np.float32).ravel()) * np.float32(num_bins / absmax)
    return np.bincount(np.minimum(scaled.astype(np.int32), num_bins - 1), minlength=num_bins)


def collect_ranges(
    model: Any,
    tensors: list[str],
    feeds: list[Feeds],
    num_bins: int = 2048,
    levels: int = 128,
    batch: int = 8,
    on_run: Callable[[int, int], None] | None = None,
    hist_values: int | None = None,
) -> dict[str, TensorRange]:
    """Two passes over the data: min/max, then |x| histograms over [0, absmax]; then the entropy and MSE amax.

    Both are computed inside the graph (calibration/stats_graph.py): one run per `batch` samples covers every
    tensor, holding no more than inference does. hist_values: count at most about that many values of each
    tensor per run into its histogram (a strided sample; None: all). on_run(done, total) counts runs.
    """
    if not feeds:
        raise T2VError("no calibration samples: the captured data is empty; run `t2vtrt calibrate` again")
    inputs = {i.name for i in model.graph.input}
    computed = [t for t in tensors if t not in inputs]
    runs = batches(feeds, batch)
    done = iter(range(1, 2 * len(runs) + 1))
    lo = {t: np.inf for t in tensors}
    hi = {t: -np.inf for t in tensors}
    count = dict.fromkeys(tensors, 0)
    graph, stats = minmax_graph(model, computed)
    names = [n for triple in stats.values() for n in triple]
    sess = session(graph, node_order=True)
    for fed in runs:
        values = dict(zip(names, sess.run(names, fed)))
        found = {t: tuple(values[n] for n in triple) for t, triple in stats.items()}
        found.update({t: (fed[t].min(), fed[t].max(), fed[t].size) for t in tensors if t in inputs})
        for name, (low, high, size) in found.items():
            lo[name], hi[name], count[name] = min(lo[name], float(low)), max(hi[name], float(high)), max(count[name], int(size))
        if on_run:
            on_run(next(done), 2 * len(runs))
    del sess
    absmax = {t: max(abs(lo[t]), abs(hi[t])) for t in tensors}
    hist = {t: np.zeros(num_bins, dtype=np.int64) for t in tensors}
    counted = {t: absmax[t] for t in computed if absmax[t] > 0}
    strides = {t: sample_stride(count[t], hist_values) for t in tensors}
    graph, counts = histogram_graph(model, counted, num_bins, strides)
    sess = session(graph, node_order=True)
    for fed in runs:
        for name, values in zip(counts, sess.run(list(counts.values()), fed)):
            hist[name] += values
        for name in (t for t in tensors if t in inputs and absmax[t] > 0):
            hist[name] += abs_histogram(fed[name].ravel()[:: strides[name]], absmax[name], num_bins)
        if on_run:
            on_run(next(done), 2 * len(runs))
    del sess
    return {t: TensorRange(lo[t], hi[t], entropy_amax(hist[t], absmax[t], levels), mse_amax(hist[t], absmax[t])) for t in tensors}


def save_ranges(path: Path, ranges: dict[str, TensorRange], meta: dict[str, Any]) -> None:
    """ranges.json: meta + per tensor min, max, entropy_amax, mse_amax (atomic)."""
    write_json(path, {"meta": meta, "tensors": {t: asdict(r) for t, r in ranges.items()}})


def load_ranges(path: Path) -> tuple[dict[str, TensorRange], dict[str, Any]]:
    """Inverse of save_ranges."""
    if not path.is_file():
        raise T2VError(f"{path} is missing: run `t2vtrt calibrate` (or `make engines`) first")
    data = json.loads(path.read_text())
    try:
        return {t: TensorRange(**r) for t, r in data["tensors"].items()}, data.get("meta", {})
    except TypeError as exc:  # a range record from an older t2v-trt (e.g. without mse_amax)
        raise T2VError(f"{path} was written by an older t2v-trt ({exc}): re-run `t2vtrt calibrate`") from exc


def scales(ranges: dict[str, TensorRange], method: str, multiplier: float = 1.0) -> dict[str, float]:
    """Signed symmetric INT8 scales (amax / 127); a zero range gets the smallest normal float."""
    return {t: max(r.amax(method) * multiplier / 127.0, float(np.finfo(np.float32).tiny)) for t, r in ranges.items()}


def differing(ranges: dict[str, TensorRange], rtol: float = 1e-6) -> int:
    """How many tensors' entropy amax differs from their max amax (proof the calibration is not max)."""
    return sum(not np.isclose(r.entropy_amax, r.absmax, rtol=rtol, atol=0.0) for r in ranges.values())
