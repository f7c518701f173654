"""The runtime's video matches the diffusers PyTorch components run with the same latents and sampler."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from t2vtrt.build import reference
from t2vtrt.build.artifacts import ArtifactPaths
from t2vtrt.runtime.pipeline import Pipeline

PROMPT, NEGATIVE = "a red balloon rising over a lake", "blurry"
STEPS, GUIDANCE, FRAMES, SIZE = 6, 7.5, 4, 64


@pytest.fixture(scope="module")
def torch_parts(tiny_paths: ArtifactPaths) -> reference.TorchComponents:
    """The tiny model's torch components (the diffusers reference)."""
    return reference.load_components(tiny_paths.model_dir)


@pytest.fixture(scope="module")
def pipe(tiny_engines: Path) -> Pipeline:
    """The runtime over the tiny cpu target."""
    return Pipeline.from_dir(tiny_engines)


@pytest.mark.parametrize("sampler", sorted(reference.SCHEDULERS))
def test_video_matches_diffusers(pipe: Pipeline, torch_parts: reference.TorchComponents, sampler: str) -> None:
    """Final latents within relative L2 1e-4 and the decoded uint8 video within one level."""
    latents = np.random.default_rng(7).standard_normal(pipe.latent_shape(1, FRAMES, SIZE, SIZE), dtype=np.float32)
    ref_latents, ref_video = reference.generate(torch_parts, PROMPT, NEGATIVE, STEPS, GUIDANCE, latents, sampler)
    context = pipe.encode([PROMPT], [NEGATIVE], guided=True)
    ours = pipe.denoise(context, STEPS, GUIDANCE, FRAMES, SIZE, SIZE, 0, sampler, latents, None)
    rel = np.linalg.norm(ours - ref_latents) / np.linalg.norm(ref_latents)
    assert rel < 1e-4, rel
    video = pipe.decode(ours)
    assert video.shape == ref_video.shape == (1, FRAMES, SIZE, SIZE, 3)
    assert np.abs(video.astype(int) - ref_video.astype(int)).max() <= 1


def test_call_returns_frames_and_is_seeded(pipe: Pipeline) -> None:
    """pipe(prompt) -> uint8 (F, H, W, 3); the same seed gives the same video, another seed another."""
    a = pipe(PROMPT, steps=2, frames=3, height=32, width=48, seed=1)
    b = pipe(PROMPT, steps=2, frames=3, height=32, width=48, seed=1)
    c = pipe(PROMPT, steps=2, frames=3, height=32, width=48, seed=2)
    assert a.shape == (3, 32, 48, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert pipe.timings.engine_s["denoiser"] > 0


def test_batch_of_prompts_and_no_guidance(pipe: Pipeline) -> None:
    """A list of prompts gives (B, F, H, W, 3); guidance <= 1 runs the denoiser on the prompt batch alone."""
    video = pipe([PROMPT, "a cat"], steps=1, frames=2, height=32, width=32, guidance=1.0)
    assert video.shape == (2, 2, 32, 32, 3)


def test_low_vram_loads_each_stage_on_demand(tiny_engines: Path) -> None:
    """--low-vram: no engine is held between calls, and the video is the same."""
    low = Pipeline.from_dir(tiny_engines, low_vram=True)
    assert low.sessions == {}
    video = low(PROMPT, steps=2, frames=2, height=32, width=32, seed=3)
    assert low.sessions == {}
    assert np.array_equal(video, Pipeline.from_dir(tiny_engines)(PROMPT, steps=2, frames=2, height=32, width=32, seed=3))


def test_recording_sees_every_engine_call_and_changes_nothing(pipe: Pipeline) -> None:
    """Pipeline.recording tells a hook each engine call's component and inputs, only inside the block; frames are as without it."""
    calls: list[tuple[str, tuple[str, ...]]] = []
    with pipe.recording(lambda component, feeds: calls.append((component, tuple(sorted(feeds))))):
        recorded = pipe(PROMPT, steps=2, frames=2, height=32, width=32, seed=3)
    plain = pipe(PROMPT, steps=2, frames=2, height=32, width=32, seed=3)
    assert np.array_equal(recorded, plain)
    assert [c for c, _ in calls] == ["text_encoder", "denoiser", "denoiser", "vae_decoder"]
    assert calls[1][1] == ("encoder_hidden_states", "sample", "timestep")
    pipe(PROMPT, steps=1, frames=2, height=32, width=32, seed=3)
    assert len(calls) == 4  # the hook is gone once the block ends
