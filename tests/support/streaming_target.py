"""A small synthetic target with a Wan-shaped contract: flow sampler, streaming causal VAE, role-named I/O.

Not a test module: tests import it by name (pyproject's pythonpath has tests/support). Every graph is a tiny
torch module exported with the TorchScript exporter; the streaming VAE pair shares its weights with a
full-sequence causal decoder (`CausalDecoder.forward`), the reference the runtime's chunk loop must equal.
Tensor names differ from unet3d's on purpose: the runtime must find them by role.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from t2vtrt.build.engines.manifest import build_manifest, variant_entry, write_manifest
from t2vtrt.build.families.spec import ComponentSpec, Defaults, LatentLayout, SchedulerInfo, ShapeRanges, TensorSpec
from t2vtrt.runtime.files import sha256_file

Z, HIDDEN, SEQ, VOCAB, CHANNELS, TEMPORAL = 4, 8, 8, 16, 6, 4
# Wan2.2-TI2V-5B's scheduler config (the numpy UniPC and diffusers' read the same dict).
FLOW_CONFIG: dict[str, Any] = {
    "_class_name": "UniPCMultistepScheduler",
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "beta_start": 0.0001,
    "disable_corrector": [],
    "final_sigmas_type": "zero",
    "flow_shift": 5.0,
    "lower_order_final": True,
    "num_train_timesteps": 1000,
    "predict_x0": True,
    "prediction_type": "flow_prediction",
    "solver_order": 2,
    "solver_type": "bh2",
    "steps_offset": 0,
    "timestep_spacing": "linspace",
    "use_flow_sigmas": True,
}
WORDS = ["<pad>", "<unk>", "a", "red", "circle", "moving", "left", "on", "dark", "background", "blue", "square"]


class CausalConv(nn.Module):
    """A 3D convolution that sees only the current and the two previous frames (a causal cache of 2 frames)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(cin, cout, kernel_size=3, padding=(0, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Full sequence: the two frames before the first are zeros."""
        return self.conv(torch.cat([torch.zeros_like(x[:, :, :1]).repeat(1, 1, 2, 1, 1), x], dim=2))


class CausalDecoder(nn.Module):
    """latent (B, Z, L, h, w) -> frames (B, 3, 1 + 4 (L - 1), 2h, 2w): causal conv, x4 in time (x1 for frame 0), x2 in space, causal conv."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv_in = CausalConv(Z, CHANNELS)
        self.time_up = nn.Conv3d(CHANNELS, CHANNELS * TEMPORAL, kernel_size=1)
        self.conv_out = CausalConv(CHANNELS, 3)

    def upsample(self, x: torch.Tensor) -> torch.Tensor:
        """Each frame becomes TEMPORAL frames, each pixel 2x2."""
        b, c, t, h, w = x.shape
        y = self.time_up(x).reshape(b, TEMPORAL, c, t, h, w).permute(0, 2, 3, 1, 4, 5).reshape(b, c, t * TEMPORAL, h, w)
        return torch.nn.functional.interpolate(y, scale_factor=(1.0, 2.0, 2.0), mode="nearest")

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        """The whole video at once (the reference)."""
        up = self.upsample(torch.relu(self.conv_in(latent)))
        up = torch.cat([up[:, :, TEMPORAL - 1 : TEMPORAL], up[:, :, TEMPORAL:]], dim=2)  # frame 0 keeps one frame
        return torch.tanh(self.conv_out.conv(torch.cat([torch.zeros_like(up[:, :, :1]).repeat(1, 1, 2, 1, 1), up], dim=2)))

    def step(self, latent: torch.Tensor, cache0: torch.Tensor, cache1: torch.Tensor, first: bool) -> tuple[torch.Tensor, ...]:
        """One latent frame with the previous call's caches -> its frames and the new caches."""
        x = torch.cat([cache0, latent], dim=2)
        up = self.upsample(torch.relu(self.conv_in.conv(x)))
        if first:
            up = up[:, :, TEMPORAL - 1 :]
        y = torch.cat([cache1, up], dim=2)
        return torch.tanh(self.conv_out.conv(y)), x[:, :, -2:], y[:, :, -2:]


class FirstChunk(nn.Module):
    """vae_decoder: the first latent frame, zero caches made in-graph."""

    def __init__(self, decoder: CausalDecoder) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(self, latent: torch.Tensor) -> tuple[torch.Tensor, ...]:
        b, _, _, h, w = latent.shape
        zeros0 = torch.zeros_like(latent).repeat(1, 1, 2, 1, 1)
        zeros1 = torch.zeros_like(latent[:, :1]).repeat(1, CHANNELS, 2, 2, 2)
        return self.decoder.step(latent, zeros0, zeros1, first=True)


class NextChunk(nn.Module):
    """vae_decoder_next: one more latent frame and the caches."""

    def __init__(self, decoder: CausalDecoder) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(self, latent: torch.Tensor, cache_in_0: torch.Tensor, cache_in_1: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.decoder.step(latent, cache_in_0, cache_in_1, first=False)


class TextEncoder(nn.Module):
    """input_ids -> last_hidden_state (an embedding and a linear layer)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.embed = nn.Embedding(VOCAB, HIDDEN)
        self.proj = nn.Linear(HIDDEN, HIDDEN)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.proj(self.embed(input_ids.long())))


class Denoiser(nn.Module):
    """(hidden_states, timestep, encoder_hidden_states) -> noise_pred: depends on all three, smoothly."""

    def __init__(self, seed: int = 2) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.mix = nn.Conv3d(Z, Z, kernel_size=1)
        self.ctx = nn.Linear(HIDDEN, Z)

    def forward(self, hidden_states: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        ctx = self.ctx(encoder_hidden_states.mean(dim=1))[:, :, None, None, None]
        scale = (timestep / 1000.0)[:, None, None, None, None]
        return 0.5 * self.mix(hidden_states) + 0.3 * ctx - 0.2 * scale * hidden_states


def _export(module: nn.Module, args: tuple[torch.Tensor, ...], path: Path, spec: ComponentSpec) -> None:
    """TorchScript-export `module` with the spec's names and dynamic axes."""
    torch.onnx.export(
        module.eval(),
        args,
        str(path),
        input_names=[t.name for t in spec.inputs],
        output_names=[t.name for t in spec.outputs],
        dynamic_axes=spec.dynamic_axes(),
        opset_version=17,
        dynamo=False,
    )


def specs(frames_max: int = 61, size_max: int = 128, experts: bool = False) -> dict[str, ComponentSpec]:
    """The components' I/O with roles, as a Wan family would declare them (plus a second expert when asked)."""
    lat = (4, 8, size_max // 2)
    pix = (8, 16, size_max)
    latent_5d = ("batch", Z, 1, "latent_height", "latent_width")
    caches_in = (
        TensorSpec("cache_in_0", "float32", ("batch", Z, 2, "latent_height", "latent_width"), role="cache:0"),
        TensorSpec("cache_in_1", "float32", ("batch", CHANNELS, 2, "height", "width"), role="cache:1"),
    )
    caches_out = tuple(TensorSpec(t.name.replace("_in_", "_out_"), t.dtype, t.shape, role=t.role) for t in caches_in)
    vae_axes = {"batch": (1, 1, 2), "latent_height": lat, "latent_width": lat, "height": pix, "width": pix, "frames": (1, 4, 4)}
    denoiser = ComponentSpec(
        "denoiser",
        (
            TensorSpec("hidden_states", "float32", ("batch", Z, "frames", "latent_height", "latent_width"), role="latent"),
            TensorSpec("timestep", "float32", ("batch",), (0, 1000), role="timestep"),
            TensorSpec("encoder_hidden_states", "float32", ("batch", SEQ, HIDDEN), role="context"),
        ),
        (TensorSpec("noise_pred", "float32", ("batch", Z, "frames", "latent_height", "latent_width"), role="prediction"),),
        {"batch": (1, 2, 4), "frames": (1, 4, (frames_max - 1) // TEMPORAL + 1), "latent_height": lat, "latent_width": lat},
    )
    out = {
        "text_encoder": ComponentSpec(
            "text_encoder",
            (TensorSpec("input_ids", "int64", ("batch", SEQ), (0, VOCAB - 1), role="token_ids"),),
            (TensorSpec("last_hidden_state", "float32", ("batch", SEQ, HIDDEN), role="context"),),
            {"batch": (1, 2, 4)},
        ),
        "denoiser": denoiser,
        "vae_decoder": ComponentSpec(
            "vae_decoder",
            (TensorSpec("latent", "float32", latent_5d, role="latent"),),
            (TensorSpec("frames", "float32", ("batch", 3, 1, "height", "width"), role="frames"), *caches_out),
            vae_axes,
        ),
        "vae_decoder_next": ComponentSpec(
            "vae_decoder_next",
            (TensorSpec("latent", "float32", latent_5d, role="latent"), *caches_in),
            (TensorSpec("frames", "float32", ("batch", 3, "frames", "height", "width"), role="frames"), *caches_out),
            vae_axes,
        ),
    }
    if experts:
        out["denoiser_high"] = ComponentSpec("denoiser_high", denoiser.inputs, denoiser.outputs, denoiser.axes)
    return out


def write_tokenizer(path: Path) -> None:
    """A word-level tokenizers file over WORDS (no download)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(path))


def build_target(out: Path, frames_max: int = 61, size_max: int = 128, experts: bool = False, boundary: float = 900.0) -> Path:
    """Export every graph, write tokenizer.json and a schema-v2 manifest.json through the engines stage's writer."""
    out.mkdir(parents=True, exist_ok=True)
    parts = specs(frames_max, size_max, experts)
    decoder = CausalDecoder().eval()
    lat = torch.randn(1, Z, 1, 8, 8)
    modules: dict[str, tuple[nn.Module, tuple[torch.Tensor, ...]]] = {
        "text_encoder": (TextEncoder(), (torch.zeros(2, SEQ, dtype=torch.int64),)),
        "denoiser": (Denoiser(), (torch.randn(2, Z, 2, 8, 8), torch.full((2,), 500.0), torch.randn(2, SEQ, HIDDEN))),
        "vae_decoder": (FirstChunk(decoder), (lat,)),
        "vae_decoder_next": (NextChunk(decoder), (lat, torch.randn(1, Z, 2, 8, 8), torch.randn(1, CHANNELS, 2, 16, 16))),
    }
    if experts:
        modules["denoiser_high"] = (Denoiser(seed=3), modules["denoiser"][1])
    variants = {}
    with torch.no_grad():
        for name, (module, args) in modules.items():
            _export(module, args, out / f"{name}.fp32.onnx", parts[name])
            variants[name] = {"fp32": variant_entry(out, f"{name}.fp32.onnx", "fp32", "onnxruntime")}
    write_tokenizer(out / "tokenizer.json")
    ranges = ShapeRanges(batch=(1, 1, 2), frames=(1, 13, frames_max), height=(16, 32, size_max), width=(16, 32, size_max))
    info = {
        "model": {"name": "stream-tiny", "family": "wan", "hash": "0" * 64},
        "tokenizer": {"file": "tokenizer.json", "max_length": SEQ, "pad_id": 0},
        "scheduler": SchedulerInfo("flow", FLOW_CONFIG, ("unipc", "flow-euler", "dpm++"), "unipc").to_json(),
        "latent": LatentLayout(channels=Z, spatial_factor=2, temporal_factor=TEMPORAL, vae_decode="streaming").to_json(),
        "defaults": Defaults(steps=4, guidance=5.0, frames=13, height=32, width=32, fps=16).to_json(),
        "ranges": ranges.to_json(),
        "components": {name: spec.to_json() for name, spec in parts.items()},
    }
    if experts:
        info["denoisers"] = [{"component": "denoiser_high", "until_timestep": boundary}, {"component": "denoiser", "until_timestep": None}]
    target = {"name": "cpu", "backend": "onnxruntime", "gpu": None, "tensorrt_version": None}
    write_manifest(out, build_manifest(info, target, variants, "tokenizer.json", sha256_file(out / "tokenizer.json")))
    return out


def torch_decode(latents: Any) -> Any:
    """The reference: the whole latent video through the full-sequence causal decoder, as numpy."""
    with torch.no_grad():
        return CausalDecoder().eval()(torch.from_numpy(latents)).numpy()


def manifest_json(target: Path) -> dict[str, Any]:
    """The target's manifest.json as a dict."""
    return json.loads((target / "manifest.json").read_text())


def _status_kib(field: str) -> int:
    """A /proc/self/status figure (VmRSS, VmHWM) in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def measure_decode(target: Path, latent_frames: int, size: int, how: str = "runtime") -> dict[str, int]:
    """Peak memory of decoding `latent_frames` latent frames at `size` pixels, after a warm-up decode (run it in a fresh process).

    rss_peak: the peak resident set above the resident set just before the decode (VmHWM reset through
    /proc/self/clear_refs); traced_peak: tracemalloc's peak (numpy arrays included) in a second decode.
    how="torch" decodes the whole video at once with the full-sequence torch decoder instead (the non-streaming reference).
    """
    import tracemalloc

    import numpy as np

    from t2vtrt.runtime.pipeline import Pipeline

    rng = np.random.default_rng(0)
    latents = rng.standard_normal((1, Z, latent_frames, size // 2, size // 2), dtype=np.float32)
    if how == "torch":
        decode = lambda x: torch_decode(x)  # noqa: E731
    else:
        decode = Pipeline.from_dir(target).decode
    decode(latents[:, :, :2].copy())  # warm-up: sessions, arenas and first-call allocations out of the figure
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    before = _status_kib("VmRSS")
    video = decode(latents)
    rss_peak = (_status_kib("VmHWM") - before) * 1024
    nbytes = int(video.nbytes)
    del video
    tracemalloc.start()
    video = decode(latents)
    traced_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {
        "latent_frames": latent_frames,
        "frames": int(video.shape[2] if how == "torch" else video.shape[1]),
        "output_bytes": nbytes,
        "rss_peak": rss_peak,
        "traced_peak": traced_peak,
    }
