"""wan-tiny's graphs chained by hand in numpy (ONNX Runtime) against diffusers' WanPipeline on the same weights."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest

from t2vtrt.build.artifacts import ArtifactPaths
from t2vtrt.build.families import get_family
from t2vtrt.runtime.schedulers import make_scheduler
from t2vtrt.runtime.tokenizer import PromptTokenizer

PROMPT, NEGATIVE = "a red circle moving left on a dark background", "blurry"
STEPS, GUIDANCE = 6, 5.0
# The video gate compare applies to fp32 engines; measured on wan-tiny: PSNR > 90 dB (float rounding only).
MIN_PSNR_DB = 60.0


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR of two uint8 videos in dB (inf when equal)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def onnx_generate(paths: ArtifactPaths, latents: np.ndarray, sampler: str) -> tuple[np.ndarray, np.ndarray]:
    """The manifest's contract run by hand: tokenize, encode [negative; prompt], sample with CFG, stream-decode."""
    engines = paths.engines_dir("cpu")
    manifest = json.loads((engines / "manifest.json").read_text())
    sessions = {
        c: ort.InferenceSession(str(engines / v["variants"]["fp32"]["file"]), providers=["CPUExecutionProvider"])
        for c, v in manifest["components"].items()
    }
    tok = manifest["tokenizer"]
    ids = PromptTokenizer.from_file(engines / tok["file"], tok["max_length"], tok["pad_id"]).encode([NEGATIVE, PROMPT])
    context = sessions["text_encoder"].run(None, {"input_ids": ids})[0]
    scheduler = make_scheduler(sampler, manifest["scheduler"]["config"], manifest["scheduler"]["prediction_type"])
    scheduler.set_timesteps(STEPS)
    x = latents * np.float32(scheduler.init_noise_sigma)
    for t in scheduler.timesteps:
        model_in = scheduler.scale_model_input(np.concatenate([x, x]), t)
        timestep = np.full((2,), t, np.float32)
        uncond, cond = sessions["denoiser"].run(None, {"hidden_states": model_in, "timestep": timestep, "encoder_hidden_states": context})[0]
        x = scheduler.step((uncond + GUIDANCE * (cond - uncond))[None], t, x)
    outputs = sessions["vae_decoder"].run(None, {"latent": x[:, :, :1]})
    frames, caches = [outputs[0]], outputs[1:]
    cache_names = [i.name for i in sessions["vae_decoder_next"].get_inputs()][1:]
    for index in range(1, x.shape[2]):
        outputs = sessions["vae_decoder_next"].run(None, {"latent": x[:, :, index : index + 1], **dict(zip(cache_names, caches))})
        frames.append(outputs[0])
        caches = outputs[1:]
    video = np.concatenate(frames, axis=2).transpose(0, 2, 3, 4, 1)
    return x, (np.clip(video / 2 + 0.5, 0, 1) * 255).round().astype(np.uint8)


@pytest.fixture(scope="module")
def oracle(wan_paths: ArtifactPaths):  # type: ignore[no-untyped-def]
    """The wan family's reference: WanPipeline over wan-tiny's torch weights."""
    return get_family("wan").reference(wan_paths.model_dir)


@pytest.mark.parametrize("sampler", ["unipc", "flow-euler", "dpm++"])
def test_chained_graphs_match_wan_pipeline(wan_paths: ArtifactPaths, oracle, sampler: str) -> None:  # type: ignore[no-untyped-def]
    """Same prompt, seed latents, sampler and steps: the ONNX video is WanPipeline's up to float rounding."""
    latents = np.random.default_rng(0).standard_normal((1, 4, 3, 2, 4)).astype(np.float32)
    ref_latents, ref_video = oracle.generate(PROMPT, NEGATIVE, STEPS, GUIDANCE, latents, sampler)
    our_latents, our_video = onnx_generate(wan_paths, latents, sampler)
    assert our_video.shape == ref_video.shape == (1, 9, 32, 64, 3)
    assert float(np.abs(our_latents - ref_latents).max()) < 1e-3 * float(np.abs(ref_latents).max())
    psnr = _psnr(our_video, ref_video)
    print(f"wan-tiny {sampler}: PSNR vs WanPipeline {psnr:.1f} dB, max latent diff {np.abs(our_latents - ref_latents).max():.2e}")
    assert psnr > MIN_PSNR_DB


def test_scalar_timestep_graph_matches_the_per_token_pipeline(wan_paths: ArtifactPaths, oracle) -> None:  # type: ignore[no-untyped-def]
    """TI2V-5B's WanPipeline (expand_timesteps: one timestep per token) gives the video the scalar-timestep graph gives."""
    latents = np.random.default_rng(1).standard_normal((1, 4, 2, 2, 4)).astype(np.float32)
    oracle.expand_timesteps = True
    try:
        ref_latents, ref_video = oracle.generate(PROMPT, NEGATIVE, STEPS, GUIDANCE, latents, "unipc")
    finally:
        oracle.expand_timesteps = False
    our_latents, our_video = onnx_generate(wan_paths, latents, "unipc")
    assert float(np.abs(our_latents - ref_latents).max()) < 1e-3 * float(np.abs(ref_latents).max())
    assert _psnr(our_video, ref_video) > MIN_PSNR_DB
