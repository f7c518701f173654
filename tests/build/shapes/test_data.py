"""Synthetic clips: deterministic from the seed, captioned correctly, held-out triples never in training."""

from __future__ import annotations

import numpy as np

from t2vtrt.build.shapes import data


def test_same_seed_same_clips() -> None:
    """Specs and pixels are a function of the seed alone; another seed gives other clips."""
    specs_a, clips_a = data.sample_clips(3, 12)
    specs_b, clips_b = data.sample_clips(3, 12)
    _, clips_c = data.sample_clips(4, 12)
    assert specs_a == specs_b
    assert np.array_equal(clips_a, clips_b)
    assert not np.array_equal(clips_a, clips_c)
    assert clips_a.shape == (12, data.FRAMES, data.SIZE, data.SIZE, 3) and clips_a.dtype == np.uint8


def test_caption_names_the_attributes() -> None:
    """The caption is the template filled with the spec's color, shape, motion phrase and background."""
    specs, _ = data.sample_clips(5, 20)
    for spec in specs:
        assert data.spec_caption(spec) == f"a {spec.color} {spec.shape} {data.MOTION_PHRASES[spec.motion]} on a {spec.background} background"
    assert data.caption("red", "circle", "left", "dark") == "a red circle moving left on a dark background"


def test_held_out_split() -> None:
    """18 of 126 triples are held out, none appears in training data, and every attribute value still does."""
    held, train = data.held_out_triples(), data.train_triples()
    assert len(held) == 18 and len(train) == 108 and not set(held) & set(train)
    for position, values in enumerate((data.COLORS, data.SHAPES, data.MOTIONS)):
        assert {t[position] for t in train} == set(values)
    specs, _ = data.sample_clips(6, 300)
    assert not any(data.is_held_out(*s.triple) for s in specs)
    assert len(data.prompt_set("heldout")) == 54 and len(data.prompt_set("train")) == 108


def test_clip_shows_the_spec() -> None:
    """The object's pixels have the spec's color, stay in frame and move the way the caption says."""
    rng = np.random.default_rng(0)
    spec = data.random_spec(rng, ("blue", "square", "right"), "dark")
    video = data.render(spec)
    object_px = np.abs(video.astype(int) - data.BACKGROUNDS["dark"] - spec.background_jitter).sum(-1) > 100
    assert object_px.all(axis=0)[[0, -1], :].sum() == 0 and object_px[:, :, [0, -1]].sum() == 0  # off the border
    xs = [np.nonzero(m)[1].mean() for m in object_px]
    assert xs[-1] - xs[0] >= data.TRAVEL[0] - 1
    first = video[0][object_px[0]].mean(axis=0)
    assert np.argmax(first) == 2  # blue dominates
