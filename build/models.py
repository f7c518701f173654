"""Where a model comes from: an embedded default made by code, or a local diffusers directory."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from t2vtrt.build.families import detect_family, get_family
from t2vtrt.build.families.spec import Defaults, ShapeRanges
from t2vtrt.runtime.errors import T2VError
from t2vtrt.runtime.files import atomic_dir, sha256_file

_CLIP_TEXT = {
    "vocab_size": 49408,
    "max_position_embeddings": 77,
    "bos_token_id": 49406,
    "eos_token_id": 49407,
    "pad_token_id": 49407,
}


@dataclass(frozen=True)
class EmbeddedModel:
    """A model of the real classes, made deterministically from a seed and small sizes."""

    family: str
    sizes: dict[str, Any]
    seed: int
    ranges: ShapeRanges
    defaults: Defaults
    description: str = ""
    shipped: Path | None = None  # trained weights in the repo: copied, not made from the seed


SHAPES_DIR = Path(__file__).resolve().parent / "shapes"
_SHAPES_CONFIG = json.loads((SHAPES_DIR / "train_config.json").read_text())

EMBEDDED: dict[str, EmbeddedModel] = {
    "tiny": EmbeddedModel(
        family="unet3d",
        description="random weights, ~1M denoiser parameters: the quickest build, for tests",
        seed=0,
        sizes={
            "text_encoder": {**_CLIP_TEXT, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4},
            "unet": {
                "sample_size": 8,
                "block_out_channels": (32, 64),
                "down_block_types": ("CrossAttnDownBlock3D", "DownBlock3D"),
                "up_block_types": ("UpBlock3D", "CrossAttnUpBlock3D"),
                "layers_per_block": 1,
                "attention_head_dim": 8,
                "norm_num_groups": 32,
            },
            "vae": {
                "block_out_channels": (16, 16, 32, 32),
                "down_block_types": ("DownEncoderBlock2D",) * 4,
                "up_block_types": ("UpDecoderBlock2D",) * 4,
                "latent_channels": 4,
                "layers_per_block": 1,
                "norm_num_groups": 8,
                "sample_size": 64,
            },
        },
        ranges=ShapeRanges(batch=(1, 1, 2), frames=(1, 8, 16), height=(32, 64, 128), width=(32, 64, 128)),
        defaults=Defaults(steps=10, guidance=7.5, frames=8, height=64, width=64, fps=8),
    ),
    "bench": EmbeddedModel(
        family="unet3d",
        description="random weights, the issue's benchmark size: (64,128,256,256) channels, 16 frames of 32x32 latents",
        seed=0,
        sizes={
            "text_encoder": {**_CLIP_TEXT, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4},
            "unet": {
                "sample_size": 32,
                "block_out_channels": (64, 128, 256, 256),
                "down_block_types": ("CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"),
                "up_block_types": ("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"),
                "layers_per_block": 1,
                "attention_head_dim": 8,
                "norm_num_groups": 32,
            },
            "vae": {
                "block_out_channels": (16, 16, 32, 32),
                "down_block_types": ("DownEncoderBlock2D",) * 4,
                "up_block_types": ("UpDecoderBlock2D",) * 4,
                "latent_channels": 4,
                "layers_per_block": 1,
                "norm_num_groups": 8,
                "sample_size": 256,
            },
        },
        ranges=ShapeRanges(batch=(1, 1, 1), frames=(8, 16, 16), height=(256, 256, 256), width=(256, 256, 256)),
        defaults=Defaults(steps=10, guidance=7.5, frames=16, height=256, width=256, fps=8),
    ),
    "wan-tiny": EmbeddedModel(
        family="wan",
        description="random weights, Wan2.2-TI2V-5B's structure scaled down (DiT, UMT5, residual causal VAE): the wan family's test model",
        seed=0,
        sizes={
            "seq_len": 32,
            "text_encoder": {"d_model": 32, "d_kv": 8, "d_ff": 64, "num_layers": 2, "num_heads": 4, "relative_attention_num_buckets": 8},
            "transformer": {
                "patch_size": (1, 2, 2),
                "num_attention_heads": 2,
                "attention_head_dim": 16,
                "in_channels": 4,
                "out_channels": 4,
                "freq_dim": 32,
                "ffn_dim": 64,
                "num_layers": 2,
                "rope_max_seq_len": 64,
            },
            # TI2V-5B's VAE (residual blocks, patch 2, x16 spatial, x4 temporal) at 16 base channels.
            "vae": {
                "base_dim": 8,
                "decoder_base_dim": 16,
                "z_dim": 4,
                "dim_mult": (1, 2, 2, 2),
                "num_res_blocks": 1,
                "temperal_downsample": (False, True, True),
                "is_residual": True,
                "in_channels": 12,
                "out_channels": 12,
                "patch_size": 2,
                "scale_factor_spatial": 16,
                "scale_factor_temporal": 4,
            },
        },
        ranges=ShapeRanges(batch=(1, 1, 2), frames=(1, 5, 9), height=(32, 32, 64), width=(32, 64, 64)),
        defaults=Defaults(steps=6, guidance=5.0, frames=5, height=32, width=64, fps=8),
    ),
    "shapes": EmbeddedModel(
        family="unet3d",
        description="trained on synthetic colored shapes (build/shapes): follows color, shape and motion prompts; the default build",
        seed=_SHAPES_CONFIG["seed"],
        sizes={part: {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()} for part, cfg in _SHAPES_CONFIG["model"].items()},
        shipped=SHAPES_DIR / "model",
        ranges=ShapeRanges(batch=(1, 1, 2), frames=(1, 8, 16), height=(32, 64, 128), width=(32, 64, 128)),
        defaults=Defaults(steps=15, guidance=7.5, frames=8, height=64, width=64, fps=8),
    ),
}


@dataclass
class ModelRef:
    """A resolved model: its artifacts name, its diffusers directory and family."""

    name: str
    model_dir: Path
    family: str
    embedded: EmbeddedModel | None = None
    ranges: ShapeRanges = field(default_factory=ShapeRanges)
    defaults: Defaults = field(default_factory=Defaults)


def artifact_name(model: str) -> str:
    """MODEL's folder under artifacts/: an embedded name as given, a model directory's resolved basename.

    The one rule every command uses (the Makefile's MODEL_NAME restates it in Make; tests/test_makefile.py pins both).
    """
    path = Path(model).expanduser()
    return model if os.sep not in model and not path.is_dir() else path.resolve().name


def resolve_model(model: str, artifacts_root: Path) -> ModelRef:
    """Turn MODEL (an embedded name or a local path) into a ModelRef; make an embedded model if missing."""
    if model in EMBEDDED:
        spec = EMBEDDED[model]
        model_dir = artifacts_root / model / "model"
        if spec.shipped is not None:
            _copy_shipped(spec.shipped, model_dir)
        elif not (model_dir / "model_index.json").is_file():
            with atomic_dir(model_dir) as tmp:
                get_family(spec.family).create(tmp, spec.sizes, spec.seed)
        return ModelRef(model, model_dir, spec.family, spec, spec.ranges, spec.defaults)
    path = check_model_arg(model)
    family = detect_family(path)
    family.check_layout(path)
    return ModelRef(artifact_name(model), path.resolve(), family.NAME, None, family.default_ranges(), family.defaults())


def check_model_arg(model: str) -> Path:
    """A non-embedded MODEL as a path: one-line errors for an unknown name, a missing path or a file; touches nothing."""
    path = Path(model).expanduser()
    if not path.exists() and os.sep not in model and not model.startswith("."):
        raise T2VError(f"unknown model {model!r}: pass an embedded name ({', '.join(sorted(EMBEDDED))}) or the path of a local diffusers directory")
    detect_family_dir(path)
    return path


def detect_family_dir(path: Path) -> None:
    """Refuse a model path that is missing or a file, naming which."""
    if path.is_file():
        raise T2VError(
            f"model {path} is a file, not a directory: pass the diffusers model folder (the one holding "
            f"unet/, vae/, text_encoder/) or an embedded name ({', '.join(sorted(EMBEDDED))})"
        )
    if not path.is_dir():
        raise T2VError(
            f"model directory {path} does not exist: pass MODEL=<a local diffusers directory> "
            f"or an embedded model name ({', '.join(sorted(EMBEDDED))})"
        )


def _copy_shipped(shipped: Path, model_dir: Path) -> None:
    """Copy shipped weights to artifacts/<name>/model, again whenever the repo's copy changed (retrained)."""
    if not (shipped / "model_index.json").is_file():
        raise T2VError(f"the shipped model {shipped} is missing: restore it from git or retrain it with `t2vtrt train-shapes`")
    if (model_dir / "model_index.json").is_file() and model_hash(model_dir) == model_hash(shipped):
        return
    with atomic_dir(model_dir) as tmp:
        shutil.copytree(shipped, tmp, dirs_exist_ok=True)


def model_hash(model_dir: Path) -> str:
    """sha256 over the directory's relative file names and contents (order-independent of the walk)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(model_dir)).encode() + b"\0" + sha256_file(path).encode() + b"\n")
    return digest.hexdigest()
