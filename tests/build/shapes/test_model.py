"""The shipped `shapes` model follows its prompts through the real build and runtime; the random `tiny` one does not."""

from __future__ import annotations

from pathlib import Path

import pytest

from t2vtrt.build.artifacts import ArtifactPaths
from t2vtrt.build.models import EMBEDDED, model_hash, resolve_model
from t2vtrt.build.shapes import adherence
from t2vtrt.calibration.prompts import load_prompts
from t2vtrt.runtime.pipeline import Pipeline

# Every held-out (color, shape, motion) combination once (never seen in training), on the dark background.
PROMPTS = tuple(load_prompts("eval", 18, "prompts_shapes_eval.txt"))
STEPS, GUIDANCE = 10, 7.5


@pytest.fixture(scope="module")
def shapes_engines(artifacts_root: Path) -> Path:
    """The shipped model exported, patched and built for the cpu target (the `make engines` stages)."""
    from t2vtrt.build.engines.cpu import build_cpu_target
    from t2vtrt.build.export import run_export
    from t2vtrt.build.surgery.stage import run_surgery_stage

    run_export("shapes", artifacts_root)
    paths = ArtifactPaths(artifacts_root / "shapes")
    run_surgery_stage(paths)
    return build_cpu_target(paths).parent


def accuracy(engines: Path) -> dict[str, float]:
    """Per attribute: the share of held-out prompts whose video the evaluator reads as requested."""
    pipe = Pipeline.from_dir(engines)
    return adherence.accuracy([adherence.score(p, pipe(p, steps=STEPS, guidance=GUIDANCE, seed=0)) for p in PROMPTS])


def test_shipped_model_follows_prompts(shapes_engines: Path) -> None:
    """Issue 7's gate at 10 steps: color on every held-out prompt, motion on >= 80 % (measured 100 % / 100 %)."""
    acc = accuracy(shapes_engines)
    assert acc["color"] == 1.0 and acc["motion"] >= 0.8, acc


def test_random_model_fails_the_same_check(tiny_engines: Path) -> None:
    """The same check on the random-weight tiny model fails (measured 17 % / 17 %): the metric is not fooled by noise."""
    acc = accuracy(tiny_engines)
    assert acc["color"] < 0.5 and acc["motion"] < 0.5, acc


def test_shipped_weights_are_copied_and_refreshed(tmp_path: Path) -> None:
    """resolve_model copies build/shapes/model into artifacts and copies it again when the copy differs."""
    shipped = EMBEDDED["shapes"].shipped
    assert shipped is not None
    ref = resolve_model("shapes", tmp_path)
    assert ref.model_dir == tmp_path / "shapes" / "model" and model_hash(ref.model_dir) == model_hash(shipped)
    (ref.model_dir / "scheduler" / "scheduler_config.json").write_text("{}")
    assert model_hash(resolve_model("shapes", tmp_path).model_dir) == model_hash(shipped)
