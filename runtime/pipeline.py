"""The one denoising loop for every family: manifest + tokenizer + sampler + engines -> frames.

A family contributes data only (its manifest: component I/O, latent layout, scheduler
config); nothing here knows which family built the engines.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from t2vtrt.runtime.backends import CheckedSession, open_session
from t2vtrt.runtime.errors import T2VError
from t2vtrt.runtime.manifest import Manifest, load_manifest
from t2vtrt.runtime.schedulers import make_scheduler
from t2vtrt.runtime.shapes import check_finite
from t2vtrt.runtime.tokenizer import PromptTokenizer

COMPONENTS = ("text_encoder", "denoiser", "vae_decoder")
StepCallback = Callable[[int, int], None]  # (step index, total steps)


@dataclass
class Timings:
    """Seconds spent in engine calls and in the whole call, for the overhead figure."""

    engine_s: dict[str, float] = field(default_factory=lambda: {c: 0.0 for c in COMPONENTS})
    loop_s: float = 0.0
    total_s: float = 0.0


class Pipeline:
    """Text -> video over one built target directory."""

    def __init__(self, manifest: Manifest, precision: str | None = None, low_vram: bool = False, **backend_options: Any) -> None:
        self.manifest = manifest
        self.precision = precision
        self.low_vram = low_vram
        self.backend_options = backend_options
        tok = manifest.data["tokenizer"]
        self.tokenizer = PromptTokenizer.from_file(manifest.path(tok["file"]), tok["max_length"], tok["pad_id"])
        self.sessions: dict[str, CheckedSession] = {}
        self.timings = Timings()
        if not low_vram:
            for name in COMPONENTS:
                self._session(name)

    @classmethod
    def from_dir(cls, target_dir: str | Path, precision: str | None = None, verify_hashes: bool = True, **options: Any) -> "Pipeline":
        """Load a built target directory (engines/<target>/ with its manifest.json)."""
        return cls(load_manifest(target_dir, verify_hashes=verify_hashes), precision, **options)

    def _session(self, name: str) -> CheckedSession:
        """The open engine of a component (opened on first use)."""
        if name not in self.sessions:
            self.sessions[name] = open_session(self.manifest, name, self.precision, **self.backend_options)
        return self.sessions[name]

    def _run(self, name: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run a component, timed and checked for NaN/Inf."""
        start = time.perf_counter()
        outputs = self._session(name).run(feeds)
        self.timings.engine_s[name] += time.perf_counter() - start
        check_finite(name, outputs)
        return outputs

    def _release(self, name: str) -> None:
        """--low-vram: free a stage's engine once it is done."""
        if self.low_vram and name in self.sessions:
            self.sessions.pop(name).close()

    def __call__(
        self,
        prompt: str | list[str],
        negative_prompt: str | list[str] = "",
        steps: int | None = None,
        guidance: float | None = None,
        frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
        seed: int = 0,
        sampler: str | None = None,
        latents: np.ndarray | None = None,
        callback: StepCallback | None = None,
    ) -> np.ndarray:
        """Generate: uint8 (F, H, W, 3) for one prompt, (B, F, H, W, 3) for a list."""
        start = time.perf_counter()
        self.timings = Timings()
        d = self.manifest.data["defaults"]
        prompts = _as_list(prompt)
        steps, guidance = int(steps or d["steps"]), float(d["guidance"] if guidance is None else guidance)
        frames, height, width = int(frames or d["frames"]), int(height or d["height"]), int(width or d["width"])
        self._check_request(prompts, steps, frames, height, width)
        context = self.encode(prompts, _as_list(negative_prompt, len(prompts)), guidance > 1.0)
        self._release("text_encoder")
        loop_start = time.perf_counter()
        latents = self.denoise(context, steps, guidance, frames, height, width, seed, sampler, latents, callback)
        self.timings.loop_s = time.perf_counter() - loop_start
        self._release("denoiser")
        video = self.decode(latents)
        self._release("vae_decoder")
        self.timings.total_s = time.perf_counter() - start
        return video[0] if isinstance(prompt, str) else video

    def _check_request(self, prompts: list[str], steps: int, frames: int, height: int, width: int) -> None:
        """One-line errors for an empty prompt or a size outside what the engines were built for."""
        if not prompts or any(not p.strip() for p in prompts):
            raise T2VError("the prompt is empty: pass a text such as \"a red balloon rising over a lake\"")
        if steps < 1:
            raise T2VError(f"steps must be >= 1, got {steps}")
        ranges = self.manifest.data["ranges"]
        factor = self.manifest.data["latent"]["spatial_factor"]
        for name, value in (("batch", len(prompts)), ("frames", frames), ("height", height), ("width", width)):
            lo, _, hi = ranges[name]
            if not lo <= value <= hi:
                raise T2VError(f"{name}={value} is outside the range these engines were built for [{lo}, {hi}] ({self.manifest.root})")
        if height % factor or width % factor:
            raise T2VError(f"height and width must be multiples of {factor} (the VAE's downsampling), got {height}x{width}")

    def encode(self, prompts: list[str], negatives: list[str], guided: bool) -> np.ndarray:
        """Text embeddings: [negatives; prompts] when guided (the order diffusers uses)."""
        texts = negatives + prompts if guided else prompts
        ids = self.tokenizer.encode(texts)
        return self._run("text_encoder", {"input_ids": ids})[self._output("text_encoder")]

    def denoise(self, context: np.ndarray, steps: int, guidance: float, frames: int, height: int, width: int,
                seed: int, sampler: str | None, latents: np.ndarray | None, callback: StepCallback | None) -> np.ndarray:
        """The sampler loop with classifier-free guidance, entirely in numpy."""
        sched_info = self.manifest.data["scheduler"]
        scheduler = make_scheduler(sampler or sched_info["default_sampler"], sched_info["config"], sched_info["prediction_type"])
        scheduler.set_timesteps(steps)
        guided = guidance > 1.0
        batch = context.shape[0] // 2 if guided else context.shape[0]
        shape = self.latent_shape(batch, frames, height, width)
        if latents is None:
            latents = np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)
        elif tuple(latents.shape) != shape:
            raise T2VError(f"latents must have shape {shape}, got {tuple(latents.shape)}")
        latents = (latents * np.float32(scheduler.init_noise_sigma)).astype(np.float32)
        denoiser_out = self._output("denoiser")
        timesteps = np.asarray(scheduler.timesteps, dtype=np.float32)
        for index, t in enumerate(timesteps):
            model_in = np.concatenate([latents, latents]) if guided else latents
            model_in = scheduler.scale_model_input(model_in, t).astype(np.float32, copy=False)
            t_batch = np.full((model_in.shape[0],), t, dtype=np.float32)
            pred = self._run("denoiser", {"sample": model_in, "timestep": t_batch, "encoder_hidden_states": context})[denoiser_out]
            if guided:
                uncond, cond = np.split(pred, 2)
                pred = uncond + np.float32(guidance) * (cond - uncond)
            latents = scheduler.step(pred, t, latents).astype(np.float32, copy=False)
            if callback:
                callback(index + 1, len(timesteps))
        return latents

    def latent_shape(self, batch: int, frames: int, height: int, width: int) -> tuple[int, ...]:
        """(B, C, F', h, w) from the manifest's latent layout."""
        lat = self.manifest.data["latent"]
        latent_frames = (frames - 1) // lat["temporal_factor"] + 1 if lat["temporal_factor"] > 1 else frames
        return (batch, lat["channels"], latent_frames, height // lat["spatial_factor"], width // lat["spatial_factor"])

    def decode(self, latents: np.ndarray) -> np.ndarray:
        """Latents -> uint8 (B, F, H, W, 3), per frame in chunks that fit the decoder's profile."""
        name = "vae_decoder"
        out = self._output(name)
        if self.manifest.data["latent"]["vae_decode"] == "video":
            images = self._run(name, {"latent": latents})[out]  # (B, 3, F, H, W)
            return _to_uint8(images.transpose(0, 2, 3, 4, 1))
        b, c, f, h, w = latents.shape
        per_frame = latents.transpose(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
        chunk = self.manifest.component(name)["axes"]["batch"][2]
        images = np.concatenate([self._run(name, {"latent": per_frame[i:i + chunk]})[out] for i in range(0, b * f, chunk)])
        return _to_uint8(images.reshape(b, f, *images.shape[1:]).transpose(0, 1, 3, 4, 2))

    def _output(self, component: str) -> str:
        """The first output's name of a component."""
        return self.manifest.component(component)["outputs"][0]["name"]

    def close(self) -> None:
        """Release every engine."""
        for session in self.sessions.values():
            session.close()
        self.sessions.clear()


def _as_list(value: str | list[str], count: int | None = None) -> list[str]:
    """A prompt or list of prompts as a list (a single negative is repeated `count` times)."""
    items = [value] if isinstance(value, str) else list(value)
    if count is not None and len(items) == 1:
        items = items * count
    if count is not None and len(items) != count:
        raise T2VError(f"got {len(items)} negative prompts for {count} prompts")
    return items


def _to_uint8(images: np.ndarray) -> np.ndarray:
    """[-1, 1] floats -> uint8, rounded the way diffusers' video processor does."""
    return (np.clip(images / 2 + 0.5, 0.0, 1.0) * 255).round().astype(np.uint8)
