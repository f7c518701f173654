"""The runtime's video matches the diffusers PyTorch components run with the same latents and sampler."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from t2vtrt.build.artifacts import ArtifactPaths
from t2vtrt.runtime.pipeline import Pipeline

PROMPT, NEGATIVE = "a red balloon rising over a lake", "blurry"
STEPS, GUIDANCE, FRAMES, SIZE = 6, 7.5, 4, 64


def _reference(model_dir: Path, scheduler_cls: type, latents: np.ndarray, **scheduler_kwargs) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[no-untyped-def]
    """The denoising loop of diffusers' text-to-video pipeline, written out over the torch components."""
    from diffusers import AutoencoderKL, UNet3DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizerFast

    tokenizer = CLIPTokenizerFast.from_pretrained(model_dir / "tokenizer", local_files_only=True)
    text_encoder = CLIPTextModel.from_pretrained(model_dir / "text_encoder", local_files_only=True).eval()
    unet = UNet3DConditionModel.from_pretrained(model_dir / "unet", local_files_only=True).eval()
    vae = AutoencoderKL.from_pretrained(model_dir / "vae", local_files_only=True).eval()
    scheduler = scheduler_cls.from_pretrained(model_dir / "scheduler", **scheduler_kwargs)
    with torch.inference_mode():
        ids = tokenizer([NEGATIVE, PROMPT], padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        context = text_encoder(ids)[0]
        scheduler.set_timesteps(STEPS)
        x = torch.from_numpy(latents) * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            model_in = scheduler.scale_model_input(torch.cat([x, x]), t)
            uncond, cond = unet(model_in, t, context).sample.chunk(2)
            x = scheduler.step(uncond + GUIDANCE * (cond - uncond), t, x).prev_sample
        b, c, f, h, w = x.shape
        frames = vae.decode(x.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w) / vae.config.scaling_factor).sample
    video = frames.reshape(b, f, 3, h * 8, w * 8).permute(0, 1, 3, 4, 2).numpy()
    return x.numpy(), (np.clip(video / 2 + 0.5, 0, 1) * 255).round().astype(np.uint8)


@pytest.fixture(scope="module")
def pipe(tiny_engines: Path) -> Pipeline:
    """The runtime over the tiny cpu target."""
    return Pipeline.from_dir(tiny_engines)


@pytest.mark.parametrize(("sampler", "scheduler_name", "kwargs"), [
    ("ddim", "DDIMScheduler", {}),
    ("dpm++", "DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    ("dpm++karras", "DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True}),
])
def test_video_matches_diffusers(pipe: Pipeline, tiny_paths: ArtifactPaths, sampler: str, scheduler_name: str, kwargs: dict) -> None:  # type: ignore[type-arg]
    """Final latents within relative L2 1e-4 and the decoded uint8 video within one level."""
    import diffusers

    latents = np.random.default_rng(7).standard_normal(pipe.latent_shape(1, FRAMES, SIZE, SIZE), dtype=np.float32)
    ref_latents, ref_video = _reference(tiny_paths.model_dir, getattr(diffusers, scheduler_name), latents, **kwargs)
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
