"""The diffusers PyTorch references (each family's `reference` oracle): unet3d's text-to-video loop, WanPipeline.

Tests and `make compare` hold the runtime to it (same latents, prompt, sampler and steps) and `make bench`
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

    from t2vtrt.build.families.loading import quiet_loaders

    quiet_loaders()  # compare and bench print their own progress; transformers' weight-loading bars are noise in logs
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
        # The model's own context length, as the runtime's tokenizer pads (CLIP's 77; the trained shapes model's 16).
        length = parts.tokenizer.model_max_length if parts.tokenizer.model_max_length <= 4096 else 77
        ids = parts.tokenizer([negative, prompt], padding="max_length", max_length=length, truncation=True, return_tensors="pt").input_ids
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


class Unet3dReference:
    """The unet3d family's oracle (its Family.reference): generate() over the components loaded once."""

    SAMPLERS = tuple(SCHEDULERS)

    def __init__(self, model_dir: Path) -> None:
        self.parts = load_components(model_dir)

    def generate(
        self, prompt: str, negative: str, steps: int, guidance: float, latents: np.ndarray, sampler: str = "ddim"
    ) -> tuple[np.ndarray, np.ndarray]:
        """(final latents, uint8 video (B, F, H, W, 3)) as diffusers' text-to-video loop makes them."""
        return generate(self.parts, prompt, negative, steps, guidance, latents, sampler)


# runtime sampler name -> (diffusers scheduler class, extra config) for flow models (the wan family).
FLOW_SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "unipc": ("UniPCMultistepScheduler", {}),
    "flow-euler": ("FlowMatchEulerDiscreteScheduler", {}),
    "dpm++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
}


class WanReference:
    """The wan family's oracle: diffusers' WanPipeline over the model's torch weights, latents given."""

    SAMPLERS = tuple(FLOW_SCHEDULERS)

    def __init__(self, model_dir: Path, parts: dict[str, Any]) -> None:
        """`parts`: the family's torch modules (transformer, vae, text_encoder) loaded from model_dir."""
        import json

        from transformers import T5TokenizerFast

        self.model_dir = model_dir
        self.tokenizer = T5TokenizerFast.from_pretrained(model_dir / "tokenizer", local_files_only=True)
        self.max_length = int(self.tokenizer.model_max_length) if self.tokenizer.model_max_length <= 4096 else 512
        index = json.loads((model_dir / "model_index.json").read_text()) if (model_dir / "model_index.json").is_file() else {}
        # TI2V-5B's pipeline feeds the DiT a per-token timestep (model_index.json's expand_timesteps).
        self.expand_timesteps = bool(index.get("expand_timesteps", False))
        self.parts = parts

    def scheduler(self, sampler: str) -> Any:
        """The diffusers scheduler the runtime's `sampler` reproduces, from the model's scheduler_config.json."""
        import diffusers

        cls_name, extra = FLOW_SCHEDULERS[sampler]
        cls = getattr(diffusers, cls_name)
        config = dict(cls.load_config(self.model_dir / "scheduler"))
        if sampler == "flow-euler":  # FlowMatchEuler names UniPC's flow_shift `shift`
            extra = {**extra, "shift": config.get("flow_shift", 1.0)}
        return cls.from_config(config, **extra)

    def generate(
        self, prompt: str, negative: str, steps: int, guidance: float, latents: np.ndarray, sampler: str = "unipc"
    ) -> tuple[np.ndarray, np.ndarray]:
        """(final latents, uint8 video (B, F, H, W, 3)) from WanPipeline on these initial latents (B, C, f, h, w)."""
        import torch
        from diffusers import WanPipeline

        vae, transformer = self.parts["vae"], self.parts["transformer"]
        pipe = WanPipeline(
            tokenizer=self.tokenizer,
            text_encoder=self.parts["text_encoder"],
            vae=vae,
            transformer=transformer,
            scheduler=self.scheduler(sampler),
            expand_timesteps=self.expand_timesteps,
        )
        pipe.set_progress_bar_config(disable=True)
        b, _, f, h, w = latents.shape
        spatial, temporal = int(vae.config.scale_factor_spatial), int(vae.config.scale_factor_temporal)
        with torch.inference_mode():
            final = pipe(
                prompt=[prompt] * b,
                negative_prompt=[negative] * b,
                height=h * spatial,
                width=w * spatial,
                num_frames=(f - 1) * temporal + 1,
                num_inference_steps=steps,
                guidance_scale=guidance,
                latents=torch.from_numpy(latents),
                max_sequence_length=self.max_length,
                output_type="latent",
            ).frames
            z_dim = int(vae.config.z_dim)
            mean = torch.tensor(vae.config.latents_mean).view(1, z_dim, 1, 1, 1)
            std = torch.tensor(vae.config.latents_std).view(1, z_dim, 1, 1, 1)
            video = vae.decode(final * std + mean, return_dict=False)[0]  # (B, 3, F, H, W) in [-1, 1]
        frames = video.permute(0, 2, 3, 4, 1).numpy()
        return final.numpy(), (np.clip(frames / 2 + 0.5, 0, 1) * 255).round().astype(np.uint8)
