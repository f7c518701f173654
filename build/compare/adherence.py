"""Prompt adherence in the compare report, for models whose eval set asks for it (the trained `shapes` model).

Each built precision's videos are scored by the analytic evaluator (build/shapes/adherence.py); a
quantized precision fails when its color or motion accuracy drops more than [adherence].max_drop
below the FP32 reference videos' on the same prompts and seeds.
"""

from __future__ import annotations

import numpy as np

from t2vtrt.build.compare.gates import Check

GATED = ("color", "motion")


def accuracy_of(cases: list[tuple[str, str, int]], videos: dict[str, np.ndarray]) -> dict[str, float]:
    """Accuracy per attribute of the videos of `cases` ((key, prompt, seed)) that exist."""
    from t2vtrt.build.shapes import adherence

    scores = [adherence.score(prompt, videos[key]) for key, prompt, _ in cases if key in videos]
    return adherence.accuracy(scores)


def adherence_checks(
    cases: list[tuple[str, str, int]], reference: dict[str, np.ndarray], by_precision: dict[str, dict[str, np.ndarray]], max_drop: float
) -> list[Check]:
    """One check per precision: FP32 reference first (recorded), then each other precision gated on its drop."""
    fp32 = accuracy_of(cases, reference)
    checks = [Check("adherence", "adherence fp32-reference", "fp32", metrics=fp32)]
    for precision, videos in by_precision.items():
        check = Check(
            "adherence",
            f"adherence {precision}",
            precision,
            metrics=accuracy_of(cases, videos),
            thresholds={f"{name}_min": fp32[name] - max_drop for name in GATED},
        )
        for name in GATED:
            value, floor = check.metrics[name], fp32[name] - max_drop
            if not value >= floor - 1e-9:  # NaN fails too
                check.fail(f"{name} accuracy {value:.0%} < FP32's {fp32[name]:.0%} - {max_drop:.0%}")
        checks.append(check)
    return checks


def adherence_rows(checks: list[Check]) -> list[str]:
    """The markdown table of the adherence checks (empty when there are none)."""
    rows = [c for c in checks if c.kind == "adherence"]
    if not rows:
        return []
    names = ("color", "shape", "motion", "background", "all")
    lines = [
        "",
        "## Prompt adherence (analytic evaluator)",
        "",
        "| precision | " + " | ".join(names) + " | status |",
        "|---" * (len(names) + 2) + "|",
    ]
    for check in rows:
        cells = " | ".join(f"{100 * check.metrics.get(n, float('nan')):.0f} %" for n in names)
        lines.append(f"| {check.precision} | {cells} | {check.status} |")
    return lines
