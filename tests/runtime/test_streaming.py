"""Manifest v2 at work on a Wan-shaped synthetic target: role-named I/O, a flow sampler, experts, the streaming causal VAE."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import streaming_target as st
import torch

from t2vtrt.runtime.errors import T2VError
from t2vtrt.runtime.pipeline import Pipeline, _to_uint8
from t2vtrt.runtime.schedulers import FlowMatchEulerScheduler, UniPCMultistepScheduler, make_scheduler
from t2vtrt.runtime.schedulers.dpm_solver import DPMSolverMultistepScheduler

PROMPT = "a red circle moving left on a dark background"
SIZE = 256  # the memory figures' pixels: big enough that a frame (768 KiB as uint8) dwarfs allocator noise


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic target: text encoder, denoiser, streaming decoder pair, all exported from torch."""
    return st.build_target(tmp_path_factory.mktemp("stream") / "cpu", size_max=SIZE)


@pytest.fixture(scope="module")
def pipe(target: Path) -> Pipeline:
    """The runtime over it."""
    return Pipeline.from_dir(target)


@pytest.mark.parametrize(("batch", "latent_frames"), [(1, 1), (1, 2), (2, 5), (1, 16)])
def test_streaming_decode_equals_full_sequence_decode(pipe: Pipeline, batch: int, latent_frames: int) -> None:
    """First graph on latent frame 0, next graph per further frame, caches fed back: the torch full-sequence decode, to float rounding."""
    latents = np.random.default_rng(latent_frames).standard_normal((batch, st.Z, latent_frames, 8, 12), dtype=np.float32)
    reference = st.torch_decode(latents)  # (B, 3, 1 + 4 (L - 1), 16, 24)
    chunks = np.concatenate(list(pipe._stream_chunks(latents)), axis=2)
    assert chunks.shape == reference.shape == (batch, 3, 1 + 4 * (latent_frames - 1), 16, 24)
    assert np.abs(chunks - reference).max() < 1e-5
    video = pipe.decode(latents)
    assert video.shape == (batch, 1 + 4 * (latent_frames - 1), 16, 24, 3) and video.dtype == np.uint8
    assert np.abs(video.astype(int) - _to_uint8(reference.transpose(0, 2, 3, 4, 1)).astype(int)).max() <= 1


def test_decode_calls_first_then_next_per_latent_frame(pipe: Pipeline) -> None:
    """One call of the first graph, then one of the next graph per further latent frame, each with its caches by role."""
    calls: list[tuple[str, tuple[str, ...]]] = []
    with pipe.recording(lambda component, feeds: calls.append((component, tuple(sorted(feeds))))):
        pipe.decode(np.zeros((1, st.Z, 3, 8, 8), dtype=np.float32))
    assert calls == [("vae_decoder", ("latent",))] + [("vae_decoder_next", ("cache_in_0", "cache_in_1", "latent"))] * 2


def _flow_reference(sampler: str, latents: np.ndarray, steps: int, guidance: float) -> np.ndarray:
    """diffusers' scheduler for this sampler, from the same config, over the torch text encoder and denoiser."""
    import diffusers

    classes = {"unipc": diffusers.UniPCMultistepScheduler, "dpm++": diffusers.DPMSolverMultistepScheduler}
    if sampler == "flow-euler":
        scheduler = diffusers.FlowMatchEulerDiscreteScheduler(shift=st.FLOW_CONFIG["flow_shift"])
    else:
        scheduler = classes[sampler].from_config(st.FLOW_CONFIG)
    scheduler.set_timesteps(steps)
    words = [st.WORDS.index(w) for w in PROMPT.split()] + [0] * st.SEQ
    ids = np.array([words[: st.SEQ]], dtype=np.int64)  # padded and truncated to the encoder's length
    with torch.no_grad():
        encoder, denoiser = st.TextEncoder().eval(), st.Denoiser().eval()
        context = encoder(torch.from_numpy(np.concatenate([np.zeros_like(ids), ids])))  # [negative ""; prompt]
        x = torch.from_numpy(latents)
        for t in scheduler.timesteps:
            pred = denoiser(torch.cat([x, x]), t.float().repeat(2), context)
            uncond, cond = pred.chunk(2)
            x = scheduler.step(uncond + guidance * (cond - uncond), t, x, return_dict=False)[0]
    return x.numpy()


@pytest.mark.parametrize("sampler", ["unipc", "flow-euler", "dpm++"])
def test_flow_samplers_match_diffusers_through_the_pipeline(pipe: Pipeline, sampler: str) -> None:
    """The pipeline builds the manifest's flow sampler from its config and feeds the denoiser the timesteps it yields."""
    latents = np.random.default_rng(3).standard_normal(pipe.latent_shape(1, 9, 16, 16), dtype=np.float32)
    context = pipe.encode([PROMPT], [""], guided=True)
    fed: list[float] = []
    with pipe.recording(lambda component, feeds: fed.append(float(feeds["timestep"][0])) if component == "denoiser" else None):
        ours = pipe.denoise(context, 5, 5.0, 9, 16, 16, 0, sampler, latents, None)
    expected = make_scheduler(sampler, st.FLOW_CONFIG, "flow")
    expected.set_timesteps(5)
    assert fed == [float(t) for t in np.asarray(expected.timesteps, dtype=np.float32)]
    reference = _flow_reference(sampler, latents, 5, 5.0)
    assert np.linalg.norm(ours - reference) / np.linalg.norm(reference) < 1e-5


@pytest.mark.parametrize(
    ("sampler", "cls"), [("unipc", UniPCMultistepScheduler), ("flow-euler", FlowMatchEulerScheduler), ("dpm++", DPMSolverMultistepScheduler)]
)
def test_manifest_prediction_flow_builds_flow_samplers(sampler: str, cls: type) -> None:
    """prediction_type "flow" (the manifest's word) gives each sampler flow sigmas with the config's shift."""
    scheduler = make_scheduler(sampler, st.FLOW_CONFIG, "flow")
    assert isinstance(scheduler, cls)
    scheduler.set_timesteps(4)
    assert 900 < float(np.asarray(scheduler.timesteps)[0]) <= 1000  # shift 5 keeps the first step near pure noise


def test_generate_end_to_end_by_roles(pipe: Pipeline) -> None:
    """generate() with names unet3d never used (hidden_states, int64 input_ids, frames): 1 + 4k frames out, seeded."""
    calls: list[str] = []
    with pipe.recording(lambda component, feeds: calls.append(component)):
        video = pipe(PROMPT, frames=9, height=32, width=48, steps=3, seed=1)
    assert video.shape == (9, 32, 48, 3) and video.dtype == np.uint8
    assert calls == ["text_encoder", "denoiser", "denoiser", "denoiser", "vae_decoder", "vae_decoder_next", "vae_decoder_next"]
    assert np.array_equal(video, pipe(PROMPT, frames=9, height=32, width=48, steps=3, seed=1))
    assert set(pipe.timings.engine_s) == {"text_encoder", "denoiser", "vae_decoder"}  # the next graph counts as the decoder stage


@pytest.mark.parametrize(("frames", "suggested"), [(10, "use 9 or 13"), (12, "use 9 or 13"), (2, "use 1 or 5")])
def test_frames_that_do_not_stream_are_refused_with_the_nearest(pipe: Pipeline, frames: int, suggested: str) -> None:
    """A streaming VAE makes 1 + 4k frames: other counts are one line naming the nearest valid ones."""
    with pytest.raises(T2VError, match=f"frames={frames} does not fit this model's streaming VAE.*{suggested}$"):
        pipe(PROMPT, frames=frames, steps=1)


def test_low_vram_streams_and_releases_both_decoder_graphs(target: Path, pipe: Pipeline) -> None:
    """--low-vram opens the next graph with the decoder stage and closes both after it: same video."""
    low = Pipeline.from_dir(target, low_vram=True)
    video = low(PROMPT, frames=5, steps=2, seed=4)
    assert low.sessions == {}
    assert np.array_equal(video, pipe(PROMPT, frames=5, steps=2, seed=4))


def test_two_denoisers_switch_at_the_boundary_timestep(tmp_path: Path) -> None:
    """denoisers: [{denoiser_high, until 900}, {denoiser, null}]: steps with t >= 900 run the first, the rest the second."""
    target = st.build_target(tmp_path / "cpu", experts=True, boundary=900.0)
    pipe = Pipeline.from_dir(target)
    seen: list[tuple[str, float]] = []
    with pipe.recording(lambda c, feeds: seen.append((c, float(feeds["timestep"][0]))) if c.startswith("denoiser") else None):
        pipe(PROMPT, frames=1, steps=6, seed=0)
    assert [c for c, _ in seen] == ["denoiser_high" if t >= 900 else "denoiser" for _, t in seen]
    assert {c for c, _ in seen} == {"denoiser_high", "denoiser"}


def _measure(target: Path, latent_frames: int, how: str) -> dict[str, int]:
    """measure_decode in a fresh process (peak RSS is per process)."""
    code = (
        "import json, sys, streaming_target as st; print(json.dumps(st.measure_decode(sys.argv[1], int(sys.argv[2]), int(sys.argv[4]), sys.argv[3])))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(st.__file__).parent), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-c", code, str(target), str(latent_frames), how, str(SIZE)], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_decode_memory_does_not_grow_with_frames(target: Path) -> None:
    """Peak memory of a streamed decode above its uint8 output stays flat at 1x/2x/4x frames (a full-sequence decode's grows)."""
    runs = [_measure(target, n, "runtime") for n in (4, 8, 16)]
    print(f"streaming decode, {SIZE}x{SIZE}:", runs)  # the figures, for `pytest -s`
    extra_rss = [r["rss_peak"] - r["output_bytes"] for r in runs]
    extra_traced = [r["traced_peak"] - r["output_bytes"] for r in runs]
    assert max(extra_traced) - min(extra_traced) < 256 * 1024, extra_traced
    # The float video would add 37.7 MB from 1x to 4x here; page-level allocator noise is a few MB at most.
    assert max(extra_rss) - min(extra_rss) < 6 * 1024 * 1024, extra_rss
    full = _measure(target, 16, "torch")
    assert full["rss_peak"] > 4 * max(extra_rss)  # what streaming saves: the whole video's activations at once
