"""Per-layer-group sensitivity and the FP16 fallback decision.

Each group is measured quantized alone (every other node reads float tensors) on held-out captured
inputs. Then, starting from every non-default group in INT8, the most sensitive remaining group falls
back to FP16 until the whole graph meets the plan target (the gate's limits tightened by a margin).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from t2vtrt.calibration.gate import Thresholds, denoiser_failures
from t2vtrt.calibration.graphs import batches, session
from t2vtrt.calibration.groups import Group
from t2vtrt.calibration.metrics import denoiser_metrics
from t2vtrt.calibration.qdq import switchable
from t2vtrt.runtime.backends import Feeds

Measure = Callable[[set[str]], dict[str, float]]


def make_measure(all_quantized: Any, quantized: list[str], feeds: list[Feeds], reference: np.ndarray) -> Measure:
    """measure(int8 nodes) -> metrics of the graph where only those nodes read Q/DQ'd tensors (one session for all)."""
    graph, flags = switchable(all_quantized, quantized)
    # A run dequantizes the flagged nodes' weights (most of them in the decision's runs): weight-sized buffers of
    # many shapes, of which a pool keeps far more.
    sess = session(graph, arena=False)
    output = sess.get_outputs()[0].name
    runs = batches(feeds, 8)

    def measure(int8_nodes: set[str]) -> dict[str, float]:
        switches = {flag: np.array(node in int8_nodes) for node, flag in flags.items()}
        return denoiser_metrics(np.concatenate([sess.run([output], {**run, **switches})[0] for run in runs]), reference)

    return measure


def measure_groups(groups: list[Group], measure: Measure, on_group: Callable[[str], None] | None = None) -> None:
    """Fill each group's metrics with the error of quantizing it alone."""
    for group in groups:
        group.metrics = measure(set(group.nodes))
        if on_group:
            on_group(group.name)


def _alone(group: Group) -> str:
    """The group's own measurement, for its reason."""
    m = group.metrics
    return f"alone: rel L2 {m['rel_l2']:.4f}, cosine {m['cosine']:.5f}" if m else "not measured"


def decide(groups: list[Group], measure: Measure, target: Thresholds) -> dict[str, float]:
    """Set every group's decision and reason; return the metrics of the resulting graph."""
    for group in groups:
        if group.default_pattern is not None:
            group.decision = "fp16"
            group.reason = f"family default (pattern {group.default_pattern!r}); {_alone(group)}"
    candidates = sorted((g for g in groups if g.default_pattern is None), key=lambda g: -g.metrics.get("rel_l2", 0.0))
    int8 = {n for g in candidates for n in g.nodes}
    current = measure(int8)
    while candidates and denoiser_failures(current, target):
        group = candidates.pop(0)
        missed = "; ".join(denoiser_failures(current, target))
        group.decision = "fp16"
        group.reason = f"most sensitive group left ({_alone(group)}); with it in INT8 the graph missed the plan target: {missed}"
        int8 -= set(group.nodes)
        current = measure(int8)
    for group in candidates:
        group.decision = "int8"
        group.reason = f"{_alone(group)}; the graph meets the plan target with it in INT8"
    return current
