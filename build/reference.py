"""The diffusers PyTorch reference: the text-to-video loop over the torch components.

Tests hold the runtime to it (same latents, prompt, sampler and steps) and `make bench`
times it. It loads the components directly (not the deprecated TextToVideoSDPipeline).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# runtime sampler name -> (diffusers scheduler class, extra config)
SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "ddim": ("DDIMScheduler", {}),
    "dpm++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "dpm++karras": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True}),
    "unipc": ("UniPCMultistepScheduler", {}),
}


@dataclass
class TorchComponents:
    """The unet3d family's torch modules and tokenizer, loaded from a diffusers directory."""

    tokenizer: Any
    text_encoder: Any
    unet: Any
    vae: Any
    model_dir: Path


def load_components(model_dir: Path) -> TorchComponents:
    """Load tokenizer, text encoder, UNet and VAE (local files only)."""
    from diffusers import AutoencoderKL, UNet3DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizerFast

    return TorchComponents(
        tokenizer=CLIPTokenizerFast.from_pretrained(model_dir / "tokenizer", local_files_only=True),
        text_encoder=CLIPTextModel.from_pretrained(model_dir / "text_encoder", local_files_only=True).eval(),
        unet=UNet3DConditionModel.from_pretrained(model_dir / "unet", local_files_only=True, low_cpu_mem_usage=False).eval(),
        vae=AutoencoderKL.from_pretrained(model_dir / "vae", local_files_only=True, low_cpu_mem_usage=False).eval(),
        model_dir=model_dir,
    )


def generate(
    parts: TorchComponents, prompt: str, negative: str, steps: int, guidance: float, latents: np.ndarray, sampler: str = "ddim"
) -> tuple[np.ndarray, np.ndarray]:
    """(final latents, uint8 video (B, F, H, W, 3)) the way diffusers' text-to-video pipeline makes them."""
    import diffusers
    import torch

    cls_name, extra = SCHEDULERS[sampler]
    scheduler = getattr(diffusers, cls_name).from_pretrained(parts.model_dir / "scheduler", **extra)
    with torch.inference_mode():
        ids = parts.tokenizer([negative, prompt], padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        context = parts.text_encoder(ids)[0]
        scheduler.set_timesteps(steps)
        x = torch.from_numpy(latents) * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            model_in = scheduler.scale_model_input(torch.cat([x, x]), t)
            uncond, cond = parts.unet(model_in, t, context).sample.chunk(2)
            x = scheduler.step(uncond + guidance * (cond - uncond), t, x).prev_sample
        b, c, f, h, w = x.shape
        frames = parts.vae.decode(x.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w) / parts.vae.config.scaling_factor).sample
    video = frames.reshape(b, f, *frames.shape[1:]).permute(0, 1, 3, 4, 2).numpy()
    return x.numpy(), (np.clip(video / 2 + 0.5, 0, 1) * 255).round().astype(np.uint8)
