"""Train the `shapes` model on synthetic clips: the VAE first, then the UNet3D on its latents.

Resumable: every phase writes its result (or a checkpoint at least every `checkpoint_seconds`) into
the work directory and skips what is already done, so an interrupted run continues where it stopped.
Batches and noise are drawn from (seed, phase, step), so a resumed run sees the same data as an
uninterrupted one.

The text encoder starts from the unet3d family's seeded random CLIP and is trained jointly with the
UNet (`train_text_encoder`): a frozen random CLIP does give a distinct embedding per caption, but
after its final LayerNorm captions differ by only 10-30 % per position, so the UNet's cross-attention
learns to read them far more slowly than the CPU budget allows; training the 2-layer encoder costs
a few percent of a step. Its context is 16 tokens (the captions need at most 12), not 77: with 77, the
uniform attention of an untrained cross-attention layer averages the caption's few words away under
65 padding tokens.

    python -m t2vtrt.build.shapes.train [--work DIR] [--out build/shapes/model] [--vae DIR]   (or: t2vtrt train-shapes)
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from t2vtrt.build.shapes import adherence, data
from t2vtrt.runtime.files import atomic_dir, atomic_path, write_json

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "train_config.json"
SHIPPED = HERE / "model"
SUMMARY = HERE / "training_summary.json"
DEFAULT_WORK = Path("artifacts") / "shapes-train"
EMPTY = ""  # the unconditional prompt: what the runtime's default negative prompt encodes


def load_config(path: Path = CONFIG) -> dict[str, Any]:
    """The training config (seed, sizes, schedules) from the repo."""
    return json.loads(Path(path).read_text())


def model_sizes(config: dict[str, Any]) -> dict[str, Any]:
    """The config's component sizes with lists turned into the tuples diffusers expects."""
    return {part: {k: tuple(v) if isinstance(v, list) else v for k, v in sizes.items()} for part, sizes in config["model"].items()}


# --- bookkeeping -------------------------------------------------------------------------------


class LossLog:
    """Appends (step, loss, lr, seconds) rows to a CSV in the work directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.exists():
            path.write_text("step,loss,lr,seconds\n")

    def add(self, step: int, loss: float, lr: float, seconds: float) -> None:
        """One row."""
        with self.path.open("a", newline="") as handle:
            csv.writer(handle).writerow([step, f"{loss:.6f}", f"{lr:.6g}", f"{seconds:.1f}"])

    def tail_mean(self, rows: int = 100) -> float:
        """Mean loss of the last rows (the figure reported as the final loss)."""
        with self.path.open() as handle:
            losses = [float(r["loss"]) for r in csv.DictReader(handle)]
        return float(np.mean(losses[-rows:])) if losses else float("nan")


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """torch.save, atomically: a kill mid-write leaves the previous checkpoint intact."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    """The checkpoint at path, or None."""
    import torch

    return torch.load(path, weights_only=False) if path.is_file() else None


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warmup, then cosine decay to a tenth of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def segments(cfg: dict[str, Any]) -> list[tuple[int, float, int]]:
    """(steps, peak lr, warmup) per learning-rate cycle: the phase's own, then each of cfg["then"] (a warm restart)."""
    return [(int(c["steps"]), float(c["lr"]), int(c["warmup"])) for c in [cfg, *cfg.get("then", [])]]


def total_steps(cfg: dict[str, Any]) -> int:
    """Steps over all of a phase's learning-rate cycles."""
    return sum(steps for steps, _, _ in segments(cfg))


def scheduled_lr(step: int, cfg: dict[str, Any]) -> float:
    """The learning rate at a global step: lr_at within whichever cycle the step falls in."""
    start = 0
    for steps, peak, warmup in segments(cfg):
        if step < start + steps:
            return lr_at(step - start, steps, peak, warmup)
        start += steps
    steps, peak, warmup = segments(cfg)[-1]
    return lr_at(steps, steps, peak, warmup)


def step_rng(seed: int, phase: int, step: int) -> np.random.Generator:
    """The generator for one training step: the same batch whether or not the run was resumed."""
    return np.random.default_rng([seed, phase, step])


class Bar:
    """A rich progress bar with the running loss, plus a plain log line every `every` steps (for nohup logs)."""

    def __init__(self, name: str, total: int, start: int, quiet: bool, every: int = 50) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        from t2vtrt.build.task_progress import console

        self.name, self.every, self.quiet = name, every, quiet
        self.interactive = console.is_terminal and not quiet
        self.progress = Progress(
            TextColumn(f"[bold]{name}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=console,
            disable=not self.interactive,
        )
        self.task = self.progress.add_task(name, total=total, completed=start, info="")

    def __enter__(self) -> "Bar":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def update(self, step: int, info: str) -> None:
        """Advance to `step` (1-based count of finished steps)."""
        self.progress.update(self.task, completed=step, info=info)
        if not self.interactive and not self.quiet and (step % self.every == 0):
            print(f"{time.strftime('%H:%M:%S')} {self.name} {step}/{self.progress.tasks[0].total} {info}", flush=True)


# --- phase 0: seeded initial components and frozen text embeddings ---------------------------------


def init_components(work: Path, config: dict[str, Any]) -> Path:
    """The family's seeded random model (text encoder, UNet, VAE init) in diffusers layout."""
    from t2vtrt.build.families.unet3d import create

    init = work / "init"
    if not (init / "model_index.json").is_file():
        with atomic_dir(init) as tmp:
            create(tmp, model_sizes(config), config["seed"])
            activate_temporal_convs(tmp / "unet", config["seed"])
            if config.get("text_encoder_init", {}).get("token_embedding_std"):
                scale_token_embeddings(tmp / "text_encoder", config["text_encoder_init"]["token_embedding_std"])
            scheduler_file = tmp / "scheduler" / "scheduler_config.json"
            scheduler = {**json.loads(scheduler_file.read_text()), **config.get("scheduler", {})}
            scheduler_file.write_text(json.dumps(scheduler, indent=2) + "\n")
    return init


def scheduler_config(init: Path) -> dict[str, Any]:
    """The model's scheduler config (the family's betas; prediction type from the training config)."""
    config = json.loads((init / "scheduler" / "scheduler_config.json").read_text())
    return {k: v for k, v in config.items() if not k.startswith("_")}


def activate_temporal_convs(unet_dir: Path, seed: int) -> None:
    """Give every TemporalConvLayer's last conv a random init instead of diffusers' zeros.

    The zeros make the temporal convs an identity that protects a pretrained image UNet; from scratch
    they only delay the one path that tells frames apart (zero padding at the clip's ends gives each
    frame its position), and a tiny model on a CPU budget cannot afford the delay.
    """
    import torch
    from diffusers import UNet3DConditionModel
    from diffusers.models.resnet import TemporalConvLayer

    unet = UNet3DConditionModel.from_pretrained(unet_dir, local_files_only=True, low_cpu_mem_usage=False)
    torch.manual_seed(seed + 3)
    for module in unet.modules():
        if isinstance(module, TemporalConvLayer):
            module.conv4[-1].reset_parameters()
    unet.save_pretrained(unet_dir)


def scale_token_embeddings(text_dir: Path, std: float) -> None:
    """Scale the random CLIP's token embeddings to `std` so that each output position is mostly its own word.

    CLIP initialises token and position embeddings alike (std 0.02) and its layers mix the words, so a random
    encoder's captions differ by only 20-30 % per position. Jointly trained, it amplified the color words (the
    UNet used them from the start) and shrank the motion words to 6-10 % (their effect on frames was noise to a
    UNet that could not yet use it), and motion was never learned. With token embeddings dominating the
    residual stream every word is a distinct unit vector after the final LayerNorm from step 0, and a frozen
    encoder cannot shrink them.
    """
    import torch
    from transformers import CLIPTextModel

    model = CLIPTextModel.from_pretrained(text_dir, local_files_only=True)
    weight = model.get_input_embeddings().weight
    with torch.no_grad():
        weight.mul_(std / weight.std())
    model.save_pretrained(text_dir)


def load_tokenizer(init: Path) -> Any:
    """The runtime's tokenizer over the model's tokenizer.json, at the text encoder's length."""
    from t2vtrt.runtime.tokenizer import PromptTokenizer

    text = json.loads((init / "text_encoder" / "config.json").read_text())
    return PromptTokenizer.from_file(init / "tokenizer" / "tokenizer.json", text["max_position_embeddings"], text["pad_token_id"])


def tokenized_captions(init: Path) -> tuple[list[str], np.ndarray]:
    """The empty prompt and every caption, as the runtime tokenizes them: (captions, int64 ids (N, length))."""
    captions = [EMPTY, *data.all_captions()]
    return captions, load_tokenizer(init).encode(captions).astype(np.int64)


def dataset(cfg: dict[str, Any]) -> tuple[list[data.ClipSpec], np.ndarray]:
    """Training clips regenerated from their seed (cheaper than storing 400 MB of frames)."""
    return data.sample_clips(cfg["seed"], cfg["clips"], cfg.get("jitter"))


def to_tensor(frames: np.ndarray) -> Any:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) in [-1, 1]."""
    import torch

    return torch.from_numpy(frames).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


# --- phase 1: the VAE ------------------------------------------------------------------------------


def vae_loss(vae: Any, images: Any, generator: Any, cfg: dict[str, Any]) -> Any:
    """Weighted MSE + tiny KL; object pixels weigh more because they are a few percent of the frame."""
    import torch

    posterior = vae.encode(images).latent_dist
    z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=generator)
    recon = vae.decode(z).sample
    chroma = images.max(dim=1, keepdim=True).values - images.min(dim=1, keepdim=True).values
    weight = 1.0 + cfg["object_weight"] * (chroma > 0.4).float()
    mse = (weight * (recon - images) ** 2).mean()
    return mse + cfg["kl_weight"] * posterior.kl().mean()


def train_vae(work: Path, config: dict[str, Any], init: Path, frames: np.ndarray, quiet: bool) -> Path:
    """Train the AutoencoderKL on single frames; write work/vae (diffusers layout) when done."""
    import torch
    from diffusers import AutoencoderKL

    out = work / "vae"
    if (out / "config.json").is_file():
        return out
    cfg = config["vae_train"]
    vae = AutoencoderKL.from_pretrained(init / "vae", local_files_only=True, low_cpu_mem_usage=False)
    vae.train()
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg["lr"], weight_decay=0.0)
    step, elapsed = _resume(work / "vae.ckpt", vae, opt)
    log = LossLog(work / "vae_loss.csv")
    flat = frames.reshape(-1, *frames.shape[2:])
    with Bar("vae", cfg["steps"], step, quiet) as bar:
        last_save, start = time.perf_counter(), time.perf_counter() - elapsed
        while step < cfg["steps"]:
            rng = step_rng(config["seed"], 1, step)
            images = to_tensor(flat[rng.choice(len(flat), cfg["batch"], replace=False)])
            lr = _set_lr(opt, lr_at(step, cfg["steps"], cfg["lr"], cfg["warmup"]))
            loss = vae_loss(vae, images, torch.Generator().manual_seed(int(rng.integers(2**31))), cfg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            log.add(step, loss.item(), lr, time.perf_counter() - start)
            bar.update(step, f"loss {loss.item():.4f}")
            if time.perf_counter() - last_save > config["checkpoint_seconds"] or step == cfg["steps"]:
                save_checkpoint(
                    work / "vae.ckpt", {"model": vae.state_dict(), "opt": opt.state_dict(), "step": step, "elapsed": time.perf_counter() - start}
                )
                last_save = time.perf_counter()
    vae.eval()
    with atomic_dir(out) as tmp:
        vae.save_pretrained(tmp)
    return out


def _resume(path: Path, model: Any, opt: Any, ema: Any = None) -> tuple[int, float]:
    """Load a checkpoint into model/optimizer(/EMA); return (step, seconds already spent)."""
    state = load_checkpoint(path)
    if state is None:
        return 0, 0.0
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    if ema is not None:
        ema.load_state_dict(state["ema"])
    return int(state["step"]), float(state.get("elapsed", 0.0))


def _set_lr(opt: Any, lr: float) -> float:
    """Set every param group's learning rate; return it."""
    for group in opt.param_groups:
        group["lr"] = lr
    return lr


# --- phase 2: latents ------------------------------------------------------------------------------


def encode_latents(work: Path, vae_dir: Path, frames: np.ndarray, latent_std: float) -> np.ndarray:
    """Posterior means of every frame scaled to `latent_std`, as (N, C, F, h, w); sets the VAE's scaling_factor.

    A std above 1 raises the signal-to-noise ratio of every timestep by its square. With the family's
    fixed schedule (alphas_cumprod 0.005 at t=999) a tiny epsilon model cannot learn the top timesteps,
    where color, position and background are decided; at std 3 they carry nine times the signal.
    """
    cache = work / "latents.npy"
    if cache.is_file():
        return np.load(cache)
    import torch
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(vae_dir, local_files_only=True, low_cpu_mem_usage=False).eval()
    n, f = frames.shape[:2]
    flat = frames.reshape(n * f, *frames.shape[2:])
    chunks = []
    with torch.inference_mode():
        for i in range(0, len(flat), 256):
            chunks.append(vae.encode(to_tensor(flat[i : i + 256])).latent_dist.mean.numpy())
    latents = np.concatenate(chunks)
    scale = float(latent_std / latents.std())
    # The runtime's decoder graph divides by scaling_factor, so the UNet sees unit-variance latents.
    vae.register_to_config(scaling_factor=scale)
    with atomic_dir(vae_dir) as tmp:
        vae.save_pretrained(tmp)
    latents = (latents * scale).astype(np.float32)
    latents = latents.reshape(n, f, *latents.shape[1:]).transpose(0, 2, 1, 3, 4).copy()
    with atomic_path(cache) as tmp:
        with tmp.open("wb") as handle:
            np.save(handle, latents)
    return latents


# --- phase 3: the UNet3D ---------------------------------------------------------------------------


class Ema:
    """Exponential moving average of a model's parameters, with the usual warmup of the decay."""

    def __init__(self, model: Any, decay: float) -> None:
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.updates = 0

    def update(self, model: Any) -> None:
        """shadow <- d * shadow + (1 - d) * weights."""
        import torch

        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        with torch.no_grad():
            for k, v in model.state_dict().items():
                self.shadow[k].mul_(d).add_(v.detach(), alpha=1 - d) if v.dtype.is_floating_point else self.shadow[k].copy_(v)

    def state_dict(self) -> dict[str, Any]:
        """Shadow weights and update count."""
        return {"shadow": self.shadow, "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from state_dict()."""
        self.shadow, self.updates = state["shadow"], state["updates"]


def noise_schedule(init: Path) -> Any:
    """alphas_cumprod of the model's scheduler (DDPM scaled_linear 0.00085..0.012), as a torch tensor."""
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(scheduler_config(init)).alphas_cumprod.float()


def sample_timesteps(n: int, steps: int, generator: Any, high: dict[str, Any] | None = None) -> Any:
    """Uniform timesteps, or with a fraction `high["fraction"]` drawn from [high["from"], steps) only.

    The caption decides the clip only at high noise (below it the noisy input already shows where the object
    is and how it moves), so extra samples there are extra signal for the caption's motion.
    """
    import torch

    t = torch.randint(0, steps, (n,), generator=generator)
    if high and high.get("fraction"):
        top = torch.randint(int(high["from"]), steps, (n,), generator=generator)
        t = torch.where(torch.rand(n, generator=generator) < high["fraction"], top, t)
    return t


def unet_loss(
    unet: Any, latents: Any, context: Any, generator: Any, alphas: Any, gamma: float, prediction: str, high: dict[str, Any] | None = None
) -> Any:
    """MSE to the epsilon or v target at (see sample_timesteps) timesteps; Min-SNR-gamma weighted when gamma is set.

    Unweighted v-MSE is x0-MSE at high noise: that is where the caption alone must place the object
    and set its path (Min-SNR-5 weighs it 0.005 there, and motion was never learned).
    """
    import torch

    t = sample_timesteps(latents.shape[0], len(alphas), generator, high)
    noise = torch.randn(latents.shape, generator=generator)
    a = alphas[t].view(-1, 1, 1, 1, 1)
    noisy = a.sqrt() * latents + (1 - a).sqrt() * noise
    pred = unet(noisy, t, context).sample
    if prediction == "v_prediction":
        target = a.sqrt() * noise - (1 - a).sqrt() * latents
    else:
        target = noise
    error = ((pred - target) ** 2).mean(dim=(1, 2, 3, 4))
    if not gamma:
        return error.mean()
    snr = alphas[t] / (1 - alphas[t])
    return (torch.clamp(snr, max=gamma) / (snr + 1 if prediction == "v_prediction" else snr) * error).mean()


def load_denoiser(init: Path, weights: dict[str, Any] | None = None) -> Any:
    """ModuleDict(unet, text_encoder) from the seeded init, optionally with trained (EMA) weights loaded."""
    import torch
    from diffusers import UNet3DConditionModel
    from transformers import CLIPTextModel

    models = torch.nn.ModuleDict(
        {
            "unet": UNet3DConditionModel.from_pretrained(init / "unet", local_files_only=True, low_cpu_mem_usage=False),
            "text_encoder": CLIPTextModel.from_pretrained(init / "text_encoder", local_files_only=True),
        }
    )
    if weights is not None:
        models.load_state_dict(weights)
    return models.eval()  # eval mode only turns off the temporal convs' dropout, which a tiny model does not need


def train_unet(work: Path, config: dict[str, Any], init: Path, vae_dir: Path, specs: list[data.ClipSpec], latents: np.ndarray, quiet: bool) -> Path:
    """Train the UNet3D (and the text encoder if configured) with caption dropout for guidance; write work/trained."""
    import torch

    out = work / "trained"
    if (out / "unet" / "config.json").is_file():
        return out
    cfg, probe_cfg = config["unet_train"], config["probe"]
    models = load_denoiser(init)
    train_text = bool(cfg["train_text_encoder"])
    models["text_encoder"].requires_grad_(train_text)
    opt = torch.optim.AdamW([p for p in models.parameters() if p.requires_grad], lr=cfg["lr"], weight_decay=0.0)
    ema = Ema(models, cfg["ema_decay"])
    step, elapsed = _resume(work / "unet.ckpt", models, opt, ema)
    log = LossLog(work / "unet_loss.csv")
    captions, token_ids = tokenized_captions(init)
    index = {c: i for i, c in enumerate(captions)}
    caption_ids = np.array([index[data.spec_caption(s)] for s in specs])
    all_ids = torch.from_numpy(token_ids)
    frozen = None
    if not train_text:  # a frozen encoder: its 379 outputs once, not every step
        with torch.no_grad():
            frozen = models["text_encoder"](input_ids=all_ids).last_hidden_state
    alphas = noise_schedule(init)
    prediction = scheduler_config(init)["prediction_type"]
    all_latents = torch.from_numpy(latents)
    total = total_steps(cfg)
    with Bar("unet", total, step, quiet) as bar:
        last_save, start = time.perf_counter(), time.perf_counter() - elapsed
        while step < total:
            rng = step_rng(config["seed"], 3, step)
            pick = rng.choice(len(specs), cfg["batch"], replace=False)
            ids = torch.from_numpy(np.where(rng.random(len(pick)) < cfg["cond_dropout"], index[EMPTY], caption_ids[pick]))
            context = frozen[ids] if frozen is not None else models["text_encoder"](input_ids=all_ids[ids]).last_hidden_state
            lr = _set_lr(opt, scheduled_lr(step, cfg))
            generator = torch.Generator().manual_seed(int(rng.integers(2**31)))
            loss = unet_loss(models["unet"], all_latents[pick], context, generator, alphas, cfg["min_snr_gamma"], prediction, cfg.get("high_noise"))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(models.parameters(), 1.0)
            opt.step()
            ema.update(models)
            step += 1
            log.add(step, loss.item(), lr, time.perf_counter() - start)
            bar.update(step, f"loss {loss.item():.4f}")
            if probe_cfg["prompts"] and (step % probe_cfg["every"] == 0 or step == total):
                _log_probe(work, step, init, vae_dir, ema, probe_cfg)
            if time.perf_counter() - last_save > config["checkpoint_seconds"] or step == total:
                save_checkpoint(
                    work / "unet.ckpt",
                    {
                        "model": models.state_dict(),
                        "opt": opt.state_dict(),
                        "ema": ema.state_dict(),
                        "step": step,
                        "elapsed": time.perf_counter() - start,
                    },
                )
                last_save = time.perf_counter()
    models.load_state_dict(ema.shadow)
    with atomic_dir(out) as tmp:
        models["unet"].save_pretrained(tmp / "unet")
        models["text_encoder"].save_pretrained(tmp / "text_encoder")
    return out


# --- probe: torch-side adherence during training ---------------------------------------------------


def sample_torch(
    unet: Any, vae: Any, context: Any, uncond: Any, steps: int, guidance: float, frames: int, seed: int, scheduler_cfg: dict[str, Any]
) -> np.ndarray:
    """DDIM with classifier-free guidance in torch (the runtime's loop), -> uint8 (B, F, H, W, 3)."""
    import torch
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_config(scheduler_cfg)
    scheduler.set_timesteps(steps)
    b = context.shape[0]
    size = unet.config.sample_size
    x = torch.randn((b, unet.config.in_channels, frames, size, size), generator=torch.Generator().manual_seed(seed))
    both = torch.cat([uncond.expand_as(context), context])
    with torch.inference_mode():
        for t in scheduler.timesteps:
            u, c = unet(torch.cat([x, x]), t, both).sample.chunk(2)
            x = scheduler.step(u + guidance * (c - u), t, x).prev_sample
        z = x.permute(0, 2, 1, 3, 4).reshape(b * frames, *x.shape[1:2], *x.shape[3:])
        images = vae.decode(z / vae.config.scaling_factor).sample
    video = images.reshape(b, frames, *images.shape[1:]).permute(0, 1, 3, 4, 2).numpy()
    return (np.clip(video / 2 + 0.5, 0, 1) * 255).round().astype(np.uint8)


def probe(models: Any, vae: Any, init: Path, prompts: list[str], steps: int, guidance: float, seed: int = 0) -> dict[str, Any]:
    """Torch samples for `prompts` and their adherence scores: a cheap progress signal while training."""
    import torch

    tokenizer = load_tokenizer(init)
    with torch.inference_mode():
        context = models["text_encoder"](input_ids=torch.from_numpy(tokenizer.encode([EMPTY, *prompts]).astype(np.int64))).last_hidden_state
    videos = sample_torch(models["unet"], vae, context[1:], context[:1], steps, guidance, data.FRAMES, seed, scheduler_config(init))
    scores = [adherence.score(p, v) for p, v in zip(prompts, videos)]
    return {"accuracy": adherence.accuracy(scores), "scores": scores, "videos": videos}


def _log_probe(work: Path, step: int, init: Path, vae_dir: Path, ema: Ema, cfg: dict[str, Any]) -> None:
    """Probe the EMA weights on a spread of held-out prompts; append the accuracies to probe.jsonl."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(vae_dir, local_files_only=True, low_cpu_mem_usage=False).eval()
    held_out = data.prompt_set("heldout")
    prompts = held_out[:: max(1, len(held_out) // cfg["prompts"])][: cfg["prompts"]]
    result = probe(load_denoiser(init, ema.shadow), vae, init, prompts, cfg["steps"], cfg["guidance"])
    line = json.dumps({"step": step, **{k: round(v, 3) for k, v in result["accuracy"].items()}})
    with (work / "probe.jsonl").open("a") as handle:
        handle.write(line + "\n")
    print(f"probe {line}", flush=True)


# --- the whole run ---------------------------------------------------------------------------------


def write_model(init: Path, vae_dir: Path, trained: Path, out: Path) -> Path:
    """The shipped directory: the family's layout from init, with the trained components swapped in."""
    with atomic_dir(out) as tmp:
        shutil.copytree(init, tmp, dirs_exist_ok=True)
        for part, src in (("vae", vae_dir), ("unet", trained / "unet"), ("text_encoder", trained / "text_encoder")):
            shutil.rmtree(tmp / part)
            shutil.copytree(src, tmp / part)
    return out


def folder_bytes(folder: Path) -> int:
    """Total size of the files under a folder."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def use_pretrained_vae(work: Path, vae: Path) -> None:
    """Start from an already trained VAE (diffusers layout) instead of phase 1: copied to work/vae, recorded in work."""
    if (work / "vae" / "config.json").is_file():
        return
    with atomic_dir(work / "vae") as tmp:
        shutil.copytree(vae, tmp, dirs_exist_ok=True)
    write_json(work / "vae_source.json", {"vae": str(vae), "bytes": folder_bytes(vae)})


def run(
    config_path: Path = CONFIG,
    work: Path = DEFAULT_WORK,
    out: Path = SHIPPED,
    quiet: bool = False,
    summary: Path | None = SUMMARY,
    echo: Callable[[str], None] = print,
    vae: Path | None = None,
) -> dict[str, Any]:
    """All phases, each skipped when its output exists; returns (and writes) the training summary.

    vae: a trained VAE to reuse instead of training phase 1 (its scaling factor is recomputed on the UNet data).
    """
    import torch

    torch.set_num_threads(1)  # the machine is shared; one thread is also the reproducible setting
    start = time.perf_counter()
    config = load_config(config_path)
    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config["seed"])
    init = init_components(work, config)
    if vae is not None:
        use_pretrained_vae(work, vae)
    vae_dir = work / "vae"
    if not (vae_dir / "config.json").is_file():
        _, frames = dataset(config["vae_data"])  # anywhere in frame: the VAE must reconstruct every position
        vae_dir = train_vae(work, config, init, frames, quiet)
        del frames
    specs, clips = dataset(config["unet_data"])
    echo(f"data: {len(specs)} clips of {len(data.train_triples())} training triples")
    latents = encode_latents(work, vae_dir, clips, config["unet_data"]["latent_std"])
    del clips
    trained = train_unet(work, config, init, vae_dir, specs, latents, quiet)
    write_model(init, vae_dir, trained, out)
    phases = [p for p in ("vae", "unet") if (work / f"{p}_loss.csv").is_file()]
    result = {
        "config": _display(config_path),
        "wall_seconds_this_run": round(time.perf_counter() - start, 1),
        "train_seconds": {p: _elapsed(work / f"{p}.ckpt") for p in phases},
        "steps": {p: total_steps(config[f"{p}_train"]) for p in phases},
        "final_loss": {p: round(LossLog(work / f"{p}_loss.csv").tail_mean(), 5) for p in phases},
        "model_bytes": folder_bytes(out),
        "component_bytes": {part.name: folder_bytes(part) for part in sorted(out.iterdir()) if part.is_dir()},
        "torch": torch.__version__,
    }
    for p in phases:
        if result["train_seconds"][p]:
            result.setdefault("seconds_per_step", {})[p] = round(result["train_seconds"][p] / result["steps"][p], 3)
    if (work / "vae_source.json").is_file():
        result["vae_reused_from"] = json.loads((work / "vae_source.json").read_text())["vae"]
    if (work / "probe.jsonl").is_file():
        result["probe"] = [json.loads(line) for line in (work / "probe.jsonl").read_text().splitlines() if line.strip()]
    if summary is not None:
        write_json(summary, result)
    echo(json.dumps(result, indent=2))
    return result


def _display(path: Path) -> str:
    """`path` relative to the working directory when it lies below it (summaries stay machine-independent)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _elapsed(checkpoint: Path) -> float | None:
    """Training seconds recorded in a phase's last checkpoint."""
    state = load_checkpoint(checkpoint)
    return round(float(state["elapsed"]), 1) if state else None


def main(argv: list[str] | None = None) -> None:
    """Command line: python -m t2vtrt.build.shapes.train."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="checkpoints, loss logs, caches (resumable)")
    parser.add_argument("--out", type=Path, default=SHIPPED, help="where the trained model is written")
    parser.add_argument("--vae", type=Path, default=None, help="reuse this trained VAE (diffusers layout) instead of phase 1")
    parser.add_argument("--summary", type=Path, default=SUMMARY, help="where the training summary is written")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    run(args.config, args.work, args.out, args.quiet, summary=args.summary, vae=args.vae)


if __name__ == "__main__":
    sys.exit(main())
