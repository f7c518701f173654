"""A real-size model anyone can make: random weights in the zeroscope_v2_576w / ModelScope layout and sizes.

The real diffusers / transformers classes at the published configs (UNet3DConditionModel 1.41B
parameters, an OpenCLIP-H-size CLIP text tower, the SD VAE), seeded, written by code: no download.
It measures what the real checkpoint costs (export time and memory, VRAM plans, engine builds)
without the checkpoint; its outputs are noise.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from t2vtrt.runtime.errors import T2VError

SEED = 0

# zeroscope_v2_576w text_encoder/config.json (OpenCLIP ViT-H/14 text tower, penultimate layer: 23 layers).
TEXT_ENCODER: dict[str, Any] = {
    "vocab_size": 49408,
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 23,
    "num_attention_heads": 16,
    "max_position_embeddings": 77,
    "hidden_act": "gelu",
    "projection_dim": 512,
    "layer_norm_eps": 1e-5,
    "bos_token_id": 49406,
    "eos_token_id": 49407,
    "pad_token_id": 49407,
}

# zeroscope_v2_576w unet/config.json (cross_attention_dim comes from the text encoder's hidden size).
UNET: dict[str, Any] = {
    "sample_size": 32,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": (320, 640, 1280, 1280),
    "down_block_types": ("CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"),
    "up_block_types": ("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"),
    "layers_per_block": 2,
    "attention_head_dim": 64,
    "norm_num_groups": 32,
    "norm_eps": 1e-5,
    "act_fn": "silu",
    "downsample_padding": 1,
    "mid_block_scale_factor": 1,
}

# The Stable Diffusion VAE (zeroscope_v2_576w vae/config.json).
VAE: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "block_out_channels": (128, 256, 512, 512),
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "act_fn": "silu",
    "sample_size": 512,
    "scaling_factor": 0.18215,
}

SIZES: dict[str, dict[str, Any]] = {"text_encoder": TEXT_ENCODER, "unet": UNET, "vae": VAE}
# What a correct build must have: the published parameter counts (a config typo shows up here).
EXPECTED_PARAMETERS = {"unet": (1.40e9, 1.42e9), "text_encoder": (3.3e8, 3.5e8), "vae": (8.3e7, 8.4e7)}


def make_realsize_model(out_dir: Path, seed: int = SEED) -> dict[str, Any]:
    """Write the model to out_dir (assembled aside and renamed); return {'path', 'parameters'}."""
    from t2vtrt.build.families import unet3d
    from t2vtrt.runtime.files import atomic_dir

    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / "model_index.json").is_file():
        raise T2VError(f"{out_dir} exists and is not a model directory: pass an empty or new --out")
    with atomic_dir(out_dir) as tmp:
        unet3d.create(tmp, SIZES, seed)
        counts = parameter_counts(tmp)
        check_parameter_counts(counts)
        (tmp / "realsize.json").write_text(json.dumps({"seed": seed, "parameters": counts, "sizes": _jsonable(SIZES)}, indent=2) + "\n")
    return {"path": str(out_dir), "parameters": counts}


def parameter_counts(model_dir: Path) -> dict[str, int]:
    """Parameters per component, read from the safetensors headers (no weights loaded)."""
    counts = {}
    for part in ("text_encoder", "unet", "vae"):
        total = 0
        for file in sorted((model_dir / part).glob("*.safetensors")):
            total += sum(_numel(entry["shape"]) for name, entry in _safetensors_header(file).items() if name != "__metadata__")
        counts[part] = total
    return counts


def check_parameter_counts(counts: dict[str, int]) -> None:
    """Refuse a model whose sizes are not the published ones (the point of this model is its size)."""
    for part, (lo, hi) in EXPECTED_PARAMETERS.items():
        if not lo <= counts[part] <= hi:
            raise T2VError(
                f"the real-size {part} has {counts[part]:,} parameters, expected {lo:,.0f}-{hi:,.0f}: "
                "build/realsize.py's config differs from zeroscope_v2_576w's; fix it"
            )


def _safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a .safetensors file (8-byte little-endian length, then JSON)."""
    with open(path, "rb") as handle:
        length = int.from_bytes(handle.read(8), "little")
        return json.loads(handle.read(length))


def _numel(shape: list[int]) -> int:
    """Elements of a shape."""
    count = 1
    for d in shape:
        count *= int(d)
    return count


def _jsonable(sizes: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Tuples as lists, for realsize.json."""
    return {part: {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()} for part, cfg in sizes.items()}
