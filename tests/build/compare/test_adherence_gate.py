"""Prompt adherence in compare: a precision that keeps FP32's accuracy passes, one that loses the motion fails."""

from __future__ import annotations

import numpy as np

from t2vtrt.build.compare.adherence import adherence_checks, adherence_rows
from t2vtrt.build.compare.capture import default_eval_path, load_eval_set
from t2vtrt.build.shapes import data


def _cases_and_videos() -> tuple[list[tuple[str, str, int]], dict[str, np.ndarray]]:
    """Ground-truth clips of six held-out combinations, keyed like compare's cases."""
    rng = np.random.default_rng(0)
    specs = [data.random_spec(rng, t, "dark") for t in data.held_out_triples()[:6]]
    cases = [(f"p{i}-s0", data.spec_caption(s), 0) for i, s in enumerate(specs)]
    return cases, {key: data.render(s) for (key, _, _), s in zip(cases, specs)}


def test_same_adherence_passes_frozen_motion_fails() -> None:
    """int8 = the same videos passes; a precision whose object stops moving loses motion accuracy and fails."""
    cases, reference = _cases_and_videos()
    frozen = {key: np.repeat(video[:1], len(video), axis=0) for key, video in reference.items()}
    checks = adherence_checks(cases, reference, {"int8": reference, "int8-qdq": frozen}, max_drop=0.05)
    by_precision = {c.precision: c for c in checks}
    assert by_precision["fp32"].metrics["motion"] == 1.0 and by_precision["fp32"].status == "passed"
    assert by_precision["int8"].status == "passed"
    bad = by_precision["int8-qdq"]
    assert bad.status == "failed" and any("motion accuracy" in f for f in bad.failures), bad.failures
    assert bad.metrics["color"] == 1.0  # the color is still right: only motion failed
    table = "\n".join(adherence_rows(checks))
    assert "| int8-qdq |" in table and "failed" in table


def test_shapes_model_has_its_own_eval_set() -> None:
    """compare on the shapes model scores adherence on held-out captions; other models use eval.toml."""
    shapes = load_eval_set(default_eval_path("shapes"))
    assert shapes.adherence and len(shapes.prompts) == 18
    assert set(shapes.prompts) <= set(data.prompt_set("heldout"))
    assert not load_eval_set(default_eval_path("tiny")).adherence
