"""The real-size (zeroscope_v2_576w) random model: its configs give the published sizes; parameter counting; refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from t2vtrt.build import realsize
from t2vtrt.build.artifacts import ArtifactPaths
from t2vtrt.runtime.errors import T2VError


def _meta_counts() -> dict[str, int]:
    """Parameters of the three real classes at the real-size configs, built on the meta device (no memory)."""
    from diffusers import AutoencoderKL, UNet3DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device("meta"):
        text = CLIPTextModel(CLIPTextConfig(**realsize.TEXT_ENCODER))
        unet = UNet3DConditionModel(cross_attention_dim=realsize.TEXT_ENCODER["hidden_size"], **realsize.UNET)
        vae = AutoencoderKL(**realsize.VAE)
    return {name: sum(p.numel() for p in module.parameters()) for name, module in (("text_encoder", text), ("unet", unet), ("vae", vae))}


def test_configs_give_the_published_sizes() -> None:
    """UNet3D 1.41B (320/640/1280/1280, heads of 64, cross-attention 1024), 23 x 1024 text tower, SD VAE."""
    counts = _meta_counts()
    realsize.check_parameter_counts(counts)
    assert 1_405_000_000 < counts["unet"] < 1_415_000_000
    assert realsize.UNET["block_out_channels"] == (320, 640, 1280, 1280) and realsize.UNET["attention_head_dim"] == 64
    assert realsize.TEXT_ENCODER["num_hidden_layers"] == 23 and realsize.TEXT_ENCODER["hidden_size"] == 1024
    assert realsize.VAE["scaling_factor"] == 0.18215 and realsize.VAE["block_out_channels"] == (128, 256, 512, 512)


def test_wrong_sizes_are_refused() -> None:
    """A UNet with the wrong width is not the real-size model: one line naming the component and the expected count."""
    with pytest.raises(T2VError, match="real-size unet has 865,910,724 parameters, expected"):
        realsize.check_parameter_counts({"unet": 865_910_724, "text_encoder": 340_387_840, "vae": 83_653_863})


def test_parameter_counts_read_the_safetensors_headers(tiny_paths: ArtifactPaths) -> None:
    """The header-only count equals torch's count of the loaded tiny model."""
    from diffusers import UNet3DConditionModel

    counts = realsize.parameter_counts(tiny_paths.model_dir)
    unet = UNet3DConditionModel.from_pretrained(tiny_paths.model_dir / "unet", local_files_only=True)
    assert counts["unet"] == sum(p.numel() for p in unet.parameters()) and counts["vae"] > 0


def test_an_occupied_non_model_directory_is_refused(tmp_path: Path) -> None:
    """--out pointing at a folder of other files: refused before anything is made."""
    (tmp_path / "notes.txt").write_text("mine\n")
    with pytest.raises(T2VError, match="not a model directory"):
        realsize.make_realsize_model(tmp_path)
