"""The training script on a micro config: every phase runs, writes a loadable model, and resumes."""

from __future__ import annotations

import copy
import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from t2vtrt.build.shapes import train


def _micro_config(tmp_path: Path, unet_steps: int) -> Path:
    """The shipped config with tiny data and two-step phases (the sizes are the real ones)."""
    config = copy.deepcopy(train.load_config())
    config["vae_data"]["clips"] = config["unet_data"]["clips"] = 4
    config["vae_train"].update(steps=2, batch=4, warmup=1)
    config["unet_train"].update(steps=unet_steps, batch=2, warmup=1, then=[])  # no second cycle in the micro run
    config["probe"]["prompts"] = 0
    path = tmp_path / f"config{unet_steps}.json"
    path.write_text(json.dumps(config))
    return path


def _logged_steps(work: Path) -> list[int]:
    """Steps recorded in the UNet loss log."""
    with (work / "unet_loss.csv").open() as handle:
        return [int(row["step"]) for row in csv.DictReader(handle)]


def test_micro_run_writes_a_model_and_resumes(tmp_path: Path) -> None:
    """Phases skip what exists: a second run with more UNet steps continues from the checkpoint."""
    from diffusers import UNet3DConditionModel

    work, out = tmp_path / "work", tmp_path / "model"
    train.run(_micro_config(tmp_path, 1), work, out, quiet=True, summary=None, echo=lambda _: None)
    assert _logged_steps(work) == [1]
    assert json.loads((out / "scheduler" / "scheduler_config.json").read_text())["prediction_type"] == "v_prediction"
    first = UNet3DConditionModel.from_pretrained(out / "unet").state_dict()
    vae_log = (work / "vae_loss.csv").read_text()

    train.run(_micro_config(tmp_path, 2), work, out, quiet=True, summary=None, echo=lambda _: None)
    assert _logged_steps(work) == [1]  # trained/ exists: the UNet phase is done and skipped
    shutil.rmtree(work / "trained")  # as if the first run had been killed after its checkpoint
    result = train.run(_micro_config(tmp_path, 2), work, out, quiet=True, summary=None, echo=lambda _: None)
    assert _logged_steps(work) == [1, 2]  # resumed at step 1, not restarted
    assert (work / "vae_loss.csv").read_text() == vae_log  # the VAE phase was not repeated
    second = UNet3DConditionModel.from_pretrained(out / "unet").state_dict()
    assert any(not np.array_equal(first[k].numpy(), second[k].numpy()) for k in first)
    assert result["model_bytes"] > 0


@pytest.mark.parametrize("step", [0, 5, 99])
def test_step_batches_do_not_depend_on_history(step: int) -> None:
    """The generator of a step is a function of (seed, phase, step): a resumed run draws the same batch."""
    a = train.step_rng(0, 3, step).integers(0, 1000, 8)
    b = train.step_rng(0, 3, step).integers(0, 1000, 8)
    assert np.array_equal(a, b) and not np.array_equal(a, train.step_rng(0, 3, step + 1).integers(0, 1000, 8))


def test_learning_rate_schedule() -> None:
    """Linear warmup to the peak, cosine down to a tenth of it."""
    assert train.lr_at(0, 100, 1.0, 10) == pytest.approx(0.1)
    assert train.lr_at(9, 100, 1.0, 10) == pytest.approx(1.0)
    assert train.lr_at(100, 100, 1.0, 10) == pytest.approx(0.1)


def test_warm_restart_cycles() -> None:
    """cfg["then"] appends cycles: the global step runs on into the next cycle's warmup and cosine."""
    cfg = {"steps": 100, "lr": 1.0, "warmup": 10, "then": [{"steps": 50, "lr": 0.5, "warmup": 5}]}
    assert train.total_steps(cfg) == 150 and train.total_steps({"steps": 100, "lr": 1.0, "warmup": 10}) == 100
    assert train.scheduled_lr(9, cfg) == pytest.approx(1.0)
    assert train.scheduled_lr(99, cfg) == pytest.approx(train.lr_at(99, 100, 1.0, 10))
    assert train.scheduled_lr(100, cfg) == pytest.approx(0.1)  # restart: first warmup step of the 0.5 cycle
    assert train.scheduled_lr(104, cfg) == pytest.approx(0.5)
    assert train.scheduled_lr(150, cfg) == pytest.approx(0.05)  # past the end: the last cycle's floor


def test_pretrained_vae_skips_the_vae_phase(tmp_path: Path) -> None:
    """run(vae=DIR) copies a trained VAE instead of training one, rescales it on the UNet data and says so."""
    from diffusers import AutoencoderKL

    work, out = tmp_path / "work", tmp_path / "model"
    result = train.run(_micro_config(tmp_path, 1), work, out, quiet=True, summary=None, echo=lambda _: None, vae=train.SHIPPED / "vae")
    assert not (work / "vae_loss.csv").exists() and not (work / "vae.ckpt").exists()
    assert result["vae_reused_from"] == str(train.SHIPPED / "vae") and list(result["final_loss"]) == ["unet"]
    shipped = AutoencoderKL.from_pretrained(train.SHIPPED / "vae").state_dict()
    copied = AutoencoderKL.from_pretrained(out / "vae").state_dict()
    assert all(np.array_equal(shipped[k].numpy(), copied[k].numpy()) for k in shipped)


def test_high_noise_timesteps() -> None:
    """A fraction of the timesteps comes from the top of the schedule only; none means uniform."""
    import torch

    uniform = train.sample_timesteps(4000, 1000, torch.Generator().manual_seed(0))
    biased = train.sample_timesteps(4000, 1000, torch.Generator().manual_seed(0), {"fraction": 0.5, "from": 600})
    assert 0 <= int(uniform.min()) and int(uniform.max()) < 1000 and int(biased.max()) < 1000
    assert (uniform >= 600).float().mean() == pytest.approx(0.4, abs=0.03)
    assert (biased >= 600).float().mean() == pytest.approx(0.7, abs=0.03)
    assert bool((train.sample_timesteps(500, 1000, torch.Generator(), {"fraction": 1.0, "from": 900}) >= 900).all())


def test_token_embeddings_are_scaled(tmp_path: Path) -> None:
    """The seeded init's text encoder has token embeddings at the configured std (words dominate the positions)."""
    from transformers import CLIPTextModel

    config = train.load_config()
    init = train.init_components(tmp_path, config)
    weight = CLIPTextModel.from_pretrained(init / "text_encoder").get_input_embeddings().weight
    assert float(weight.detach().std()) == pytest.approx(config["text_encoder_init"]["token_embedding_std"], rel=1e-3)
