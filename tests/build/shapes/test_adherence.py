"""The analytic evaluator recovers color, shape and motion from ground-truth clips."""

from __future__ import annotations

import numpy as np

from t2vtrt.build.shapes import adherence, data


def _accuracy(specs: list[data.ClipSpec], videos: np.ndarray) -> dict[str, float]:
    """Accuracy of the evaluator against each clip's own caption."""
    return adherence.accuracy([adherence.score(data.spec_caption(s), v) for s, v in zip(specs, videos)])


def test_recovers_ground_truth() -> None:
    """On 150 random training clips: color, motion and background always right, shape nearly always."""
    specs, videos = data.sample_clips(11, 150)
    acc = _accuracy(specs, videos)
    assert acc["color"] == acc["motion"] == acc["background"] == 1.0, acc
    assert acc["shape"] >= 0.95, acc


def test_recovers_held_out_and_noisy_clips() -> None:
    """Every held-out triple, rendered with pixel noise and a blur like a VAE's, is still read right."""
    rng = np.random.default_rng(2)
    specs = [data.random_spec(rng, t, bg) for t in data.held_out_triples() for bg in data.BACKGROUNDS]
    videos = np.stack([data.render(s) for s in specs]).astype(np.float32)
    blurred = (videos + np.roll(videos, 1, axis=2) + np.roll(videos, 1, axis=3) + np.roll(videos, (1, 1), axis=(2, 3))) / 4
    noisy = np.clip(blurred + rng.normal(0, 6, videos.shape), 0, 255).astype(np.uint8)
    acc = _accuracy(specs, noisy)
    assert acc["color"] == 1.0 and acc["motion"] == 1.0, acc
    assert acc["shape"] >= 0.85, acc


def test_nothing_to_see() -> None:
    """A gray video has no object: no color, shape or motion, so every attribute scores as wrong."""
    video = np.full((8, 64, 64, 3), 120, np.uint8)
    result = adherence.score("a red circle moving left on a gray background", video)
    assert result["detection"]["color"] is None and not result["color"]["ok"] and not result["motion"]["ok"]
    assert result["background"]["ok"]


def test_parse_prompt() -> None:
    """Attributes are read from the caption wording; unnamed ones are None."""
    assert adherence.parse_prompt("A Cyan triangle shrinking on a light background") == {
        "color": "cyan",
        "shape": "triangle",
        "motion": "shrink",
        "background": "light",
    }
    assert adherence.parse_prompt("a boat")["color"] is None
