"""The one denoising loop for every family: manifest + tokenizer + sampler + engines -> frames.

A family contributes data only (its manifest: component I/O and each tensor's role, latent layout,
scheduler config, denoisers); nothing here knows which family built the engines or its tensor names.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

import numpy as np

from t2vtrt.runtime.backends import CheckedSession, Feeds, open_session
from t2vtrt.runtime.errors import T2VError
from t2vtrt.runtime.manifest import Manifest, load_manifest
from t2vtrt.runtime.request import resolve_request
from t2vtrt.runtime.schedulers import make_scheduler
from t2vtrt.runtime.shapes import check_finite
from t2vtrt.runtime.step_schedule import StepSchedule
from t2vtrt.runtime.tokenizer import PromptTokenizer

COMPONENTS = ("text_encoder", "denoiser", "vae_decoder")  # the stages; a stage may run several components
StepCallback = Callable[[int, int], None]  # (step index, total steps)
EngineCallHook = Callable[[str, Feeds], None]  # (component, its inputs), told before each engine call


@dataclass
class Timings:
    """Seconds spent in engine calls and in the whole call, for the overhead figure."""

    engine_s: dict[str, float] = field(default_factory=lambda: {c: 0.0 for c in COMPONENTS})  # per stage
    loop_s: float = 0.0
    total_s: float = 0.0


@dataclass
class _Call:
    """The state of one call in progress: its timings and the engines it holds open (--low-vram)."""

    timings: Timings = field(default_factory=Timings)
    held: set[str] = field(default_factory=set)


@dataclass
class Generation:
    """What one call produced: frames, the call's own timings, and warnings to show the user."""

    frames: np.ndarray
    timings: Timings
    warnings: list[str] = field(default_factory=list)


def truncation_warnings(tokenizer: PromptTokenizer, prompts: list[str], negatives: list[str]) -> list[str]:
    """One line per prompt the text encoder's length cuts, with how many tokens are dropped."""
    lines = []
    for kind, texts in (("prompt", prompts), ("negative prompt", negatives)):
        for index, dropped in enumerate(tokenizer.dropped(texts) if texts else []):
            if dropped:
                which = f"{kind} {index}" if len(texts) > 1 else kind
                lines.append(
                    f"the {which} is longer than the text encoder's {tokenizer.max_length} tokens: the last "
                    f"{dropped} token(s) were dropped; shorten it to keep all of it"
                )
    return lines


@dataclass(frozen=True)
class _DenoiserIO:
    """One denoiser's manifest tensors by role, resolved before the sampler loop."""

    latent: dict[str, Any]
    timestep: dict[str, Any]
    context: dict[str, Any]
    prediction: str

    def feeds(self, latents: np.ndarray, t: np.float32, context: np.ndarray) -> Feeds:
        """A call's inputs; the timestep is the sampler's own value, per sample or one scalar."""
        shape = () if not self.timestep["shape"] else (latents.shape[0],)
        return {
            self.timestep["name"]: np.full(shape, t, dtype=self.timestep["dtype"]),
            _name(self.latent): _as(latents, self.latent),
            _name(self.context): _as(context, self.context),
        }


class Pipeline:
    """Text -> video over one built target directory.

    Thread safety: one Pipeline may serve calls from many threads at once. Each call's request, scheduler,
    latents, timings and warnings belong to the call (`generate` returns them); outputs equal serial calls
    bit for bit. Sessions are shared (engines run concurrently); with low_vram each call holds the engines
    it uses and the last call out closes one, so none is closed under a running call. Opening an engine is
    serialised. `pipe.timings` is only the last finished call's; `close()` must wait until no call runs.
    """

    def __init__(
        self,
        manifest: Manifest,
        precision: str | None = None,
        low_vram: bool = False,
        schedule: StepSchedule | Literal[False] | None = None,
        **backend_options: Any,
    ) -> None:
        """`schedule`: None = the denoiser variant's own step schedule (manifest), False = none, or one to use."""
        self.manifest = manifest
        self.precision = precision
        self.low_vram = low_vram
        self.backend_options = backend_options
        tok = manifest.data["tokenizer"]
        self.tokenizer = PromptTokenizer.from_file(manifest.path(tok["file"]), tok["max_length"], tok["pad_id"])
        self.sessions: dict[str, CheckedSession] = {}
        self.timings = Timings()
        self._calls = threading.local()  # per thread, a stack of the calls in progress (a callback may start another)
        self._lock = threading.Lock()  # guards sessions and _users: calls on several threads share them
        self._users: dict[str, int] = {}  # --low-vram: how many calls hold each open engine
        self._recorders: list[EngineCallHook] = []
        self._stages = manifest.stages  # component -> stage, for timings and --low-vram
        self.schedule = self._step_schedule(schedule)
        if not low_vram:
            for name in self._stages:
                self._session(name)
            if self.schedule:
                for name, _ in manifest.denoisers:
                    self._session(name, self.schedule.fallback)

    def _step_schedule(self, schedule: StepSchedule | Literal[False] | None) -> StepSchedule | None:
        """The denoisers' per-step variant schedule in force (the first denoiser's), its fallback checked against the built variants."""
        first = self.manifest.denoisers[0][0]
        if schedule is None:
            variant = self.manifest.variant(first, self.precision)
            schedule = StepSchedule.from_json(variant.get("schedule"), str(self.manifest.root / "manifest.json"))
        if not schedule:
            return None
        for name, _ in self.manifest.denoisers:
            if schedule.fallback not in self.manifest.component(name)["variants"]:
                built = ", ".join(self.manifest.component(name)["variants"])
                raise T2VError(
                    f"the step schedule's fallback precision {schedule.fallback!r} was not built for {name} in "
                    f"{self.manifest.root} (built: {built}); rebuild with `t2vtrt engines`"
                )
        return schedule

    @classmethod
    def from_dir(cls, target_dir: str | Path, precision: str | None = None, verify_hashes: bool = True, **options: Any) -> "Pipeline":
        """Load a built target directory (engines/<target>/ with its manifest.json)."""
        return cls(load_manifest(target_dir, verify_hashes=verify_hashes), precision, **options)

    def _session(self, name: str, precision: str | None = None) -> CheckedSession:
        """The open engine of a component, at the pipeline's precision or another (opened on first use)."""
        key = name if precision is None else f"{name}@{precision}"
        with self._lock:
            if key not in self.sessions:
                self.sessions[key] = open_session(self.manifest, name, precision or self.precision, **self.backend_options)
            call = self._call()
            if self.low_vram and call is not None and key not in call.held:
                call.held.add(key)  # this call now keeps the engine open until it releases the stage
                self._users[key] = self._users.get(key, 0) + 1
            return self.sessions[key]

    @contextlib.contextmanager
    def recording(self, hook: EngineCallHook) -> Iterator[None]:
        """Tell `hook(component, feeds)` before every engine call while the block runs.

        Offline tools (calibration's capture, compare's reference) observe this one loop rather than writing
        another. The feeds are the call's own arrays: a hook that keeps them copies them.
        """
        self._recorders.append(hook)
        try:
            yield
        finally:
            self._recorders.remove(hook)

    def _run(self, name: str, feeds: Feeds, precision: str | None = None) -> Feeds:
        """Run a component, timed and checked for NaN/Inf."""
        for hook in self._recorders:
            hook(name, feeds)
        start = time.perf_counter()
        outputs = self._session(name, precision).run(feeds)
        engine_s = self._call_timings().engine_s
        stage = self._stages.get(name, name)
        engine_s[stage] = engine_s.get(stage, 0.0) + time.perf_counter() - start
        check_finite(name, outputs)
        return outputs

    def _release(self, stage: str) -> None:
        """--low-vram: free a stage's engines (every component and precision of it) once it is done."""
        call = self._call()
        if not self.low_vram or call is None:
            return
        with self._lock:
            for key in [k for k in call.held if self._stages.get(k.split("@")[0], k.split("@")[0]) == stage]:
                call.held.discard(key)
                self._users[key] -= 1
                if self._users[key] == 0:  # the last call out closes it: never under a call still running it
                    del self._users[key]
                    self.sessions.pop(key).close()

    def __call__(self, prompt: str | list[str], *args: Any, **kwargs: Any) -> np.ndarray:
        """Generate: uint8 (F, H, W, 3) for one prompt, (B, F, H, W, 3) for a list; `generate`'s arguments, which also
        returns the call's timings and warnings."""
        return self.generate(prompt, *args, **kwargs).frames

    def generate(
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
    ) -> Generation:
        """One call: its frames, its own engine timings and its warnings (e.g. a prompt cut at the encoder's length)."""
        start = time.perf_counter()
        call = _Call()
        self._stack().append(call)
        timings = call.timings
        try:
            prompts = _as_list(prompt)
            req = resolve_request(
                self.manifest, prompts, _as_list(negative_prompt, len(prompts)), steps, guidance, frames, height, width, seed, sampler
            )  # None is the only "use the default"
            steps, guidance, frames, height, width, sampler = req.steps, req.guidance, req.frames, req.height, req.width, req.sampler
            warnings = truncation_warnings(self.tokenizer, prompts, req.negatives if guidance > 1.0 else [])
            context = self.encode(prompts, req.negatives, guidance > 1.0)
            self._release("text_encoder")
            loop_start = time.perf_counter()
            latents = self.denoise(context, steps, guidance, frames, height, width, req.seed, sampler, latents, callback)
            timings.loop_s = time.perf_counter() - loop_start
            self._release("denoiser")
            video = self.decode(latents)
            self._release("vae_decoder")
        finally:
            for name in COMPONENTS:  # an error mid-call must not keep engines open for good
                self._release(name)
            self._stack().pop()
        timings.total_s = time.perf_counter() - start
        self.timings = timings  # the last finished call's, for callers of __call__
        return Generation(video[0] if isinstance(prompt, str) else video, timings, warnings)

    def _stack(self) -> list[_Call]:
        """This thread's calls in progress, innermost last."""
        if not hasattr(self._calls, "stack"):
            self._calls.stack = []
        return self._calls.stack

    def _call(self) -> _Call | None:
        """The innermost call in progress on this thread (None outside generate, e.g. encode() called directly)."""
        stack = self._stack()
        return stack[-1] if stack else None

    def _call_timings(self) -> Timings:
        """The running call's timings (each thread's call has its own); the last call's outside one."""
        call = self._call()
        return call.timings if call is not None else self.timings

    def encode(self, prompts: list[str], negatives: list[str], guided: bool) -> np.ndarray:
        """Text embeddings: [negatives; prompts] when guided (the order diffusers uses)."""
        texts = negatives + prompts if guided else prompts
        ids, mask = self.tokenizer.encode_with_mask(texts)
        feeds = {_name(self._in("text_encoder", "token_ids")): _as(ids, self._in("text_encoder", "token_ids"))}
        if _has_role(self.manifest.component("text_encoder")["inputs"], "token_mask"):
            feeds[_name(self._in("text_encoder", "token_mask"))] = _as(mask, self._in("text_encoder", "token_mask"))
        return self._run("text_encoder", feeds)[self._out("text_encoder", "context")]

    def denoise(
        self,
        context: np.ndarray,
        steps: int,
        guidance: float,
        frames: int,
        height: int,
        width: int,
        seed: int,
        sampler: str | None,
        latents: np.ndarray | None,
        callback: StepCallback | None,
    ) -> np.ndarray:
        """The sampler loop with classifier-free guidance, entirely in numpy."""
        sched_info = self.manifest.data["scheduler"]
        # The model's own config decides the sampler's details (flow sigmas and shift for a flow model).
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
        timesteps = np.asarray(scheduler.timesteps, dtype=np.float32)
        io = {name: self._denoiser_io(name) for name, _ in self.manifest.denoisers}  # looked up once, not per step
        for index, t in enumerate(timesteps):
            model_in = np.concatenate([latents, latents]) if guided else latents
            model_in = scheduler.scale_model_input(model_in, t).astype(np.float32, copy=False)
            name = self.manifest.denoiser_at(float(t))
            variant = self.schedule.fallback if self.schedule and self.schedule.uses_fallback(float(t)) else None
            pred = self._run(name, io[name].feeds(model_in, t, context), variant)[io[name].prediction]
            if guided:
                uncond, cond = np.split(pred, 2)
                pred = uncond + np.float32(guidance) * (cond - uncond)
            latents = scheduler.step(pred, t, latents).astype(np.float32, copy=False)
            if callback:
                callback(index + 1, len(timesteps))
        return latents

    def _denoiser_io(self, name: str) -> "_DenoiserIO":
        """A denoiser's inputs and prediction output, found by role."""
        return _DenoiserIO(self._in(name, "latent"), self._in(name, "timestep"), self._in(name, "context"), self._out(name, "prediction"))

    def latent_shape(self, batch: int, frames: int, height: int, width: int) -> tuple[int, ...]:
        """(B, C, F', h, w) from the manifest's latent layout."""
        lat = self.manifest.data["latent"]
        latent_frames = (frames - 1) // lat["temporal_factor"] + 1 if lat["temporal_factor"] > 1 else frames
        return (batch, lat["channels"], latent_frames, height // lat["spatial_factor"], width // lat["spatial_factor"])

    def decode(self, latents: np.ndarray) -> np.ndarray:
        """Latents -> uint8 (B, F, H, W, 3): per frame in chunks that fit the decoder's profile, whole video, or streamed."""
        mode = self.manifest.data["latent"]["vae_decode"]
        if mode == "streaming":
            return self._decode_streaming(latents)
        name = "vae_decoder"
        latent_in, out = self._in(name, "latent"), self._out(name, "frames")
        if mode == "video":
            images = self._run(name, {latent_in["name"]: _as(latents, latent_in)})[out]  # (B, 3, F, H, W)
            return _to_uint8(images.transpose(0, 2, 3, 4, 1))
        b, c, f, h, w = latents.shape
        per_frame = latents.transpose(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
        batch_axis = latent_in["shape"][0]
        chunk = self.manifest.component(name)["axes"][batch_axis][2] if isinstance(batch_axis, str) else int(batch_axis)
        video: np.ndarray | None = None  # uint8 (B*F, H, W, 3), filled chunk by chunk: no float copy of the whole video
        for i in range(0, b * f, chunk):
            images = self._run(name, {latent_in["name"]: _as(per_frame[i : i + chunk], latent_in)})[out]
            if video is None:
                video = np.empty((b * f, images.shape[2], images.shape[3], images.shape[1]), dtype=np.uint8)
            video[i : i + chunk] = _to_uint8(images.transpose(0, 2, 3, 1))
        assert video is not None  # b * f >= 1
        return video.reshape(b, f, *video.shape[1:])

    def _decode_streaming(self, latents: np.ndarray) -> np.ndarray:
        """The streaming decoder: each batch slice's chunks in order, written into one preallocated uint8 video."""
        lat = self.manifest.data["latent"]
        factor, per_call = lat["temporal_factor"], lat["stream"]["latent_frames_per_call"]
        b, _, f, _, _ = latents.shape
        if f % per_call:
            raise T2VError(f"{f} latent frames do not split into the streaming decoder's chunks of {per_call}; pick frames the request check accepts")
        first = self._in(lat["stream"]["first"], "latent")
        batch_axis = first["shape"][0]
        rows = self.manifest.component(lat["stream"]["first"])["axes"][batch_axis][2] if isinstance(batch_axis, str) else int(batch_axis)
        video: np.ndarray | None = None
        for lo in range(0, b, rows):
            at = 0
            for chunk in self._stream_chunks(latents[lo : lo + rows]):
                frames = chunk.shape[2]
                expected = 1 + factor * (per_call - 1) if at == 0 else factor * per_call
                if frames != expected:
                    raise T2VError(
                        f"the streaming decoder returned {frames} frames for a chunk where the manifest's temporal_factor {factor} "
                        f"means {expected}; rebuild the target with `t2vtrt engines`"
                    )
                if video is None:
                    video = np.empty((b, 1 + factor * (f - 1), chunk.shape[3], chunk.shape[4], chunk.shape[1]), dtype=np.uint8)
                video[lo : lo + rows, at : at + frames] = _to_uint8(chunk.transpose(0, 2, 3, 4, 1))
                at += frames
                del chunk  # only one chunk (and the caches) alive while the next one decodes
        assert video is not None  # b >= 1 and f >= 1
        return video

    def _stream_chunks(self, latents: np.ndarray) -> Iterator[np.ndarray]:
        """Decoded pixels (B, 3, n, H, W) per chunk of latent frames: the first graph, then the next graph fed the caches."""
        stream = self.manifest.data["latent"]["stream"]
        per_call = stream["latent_frames_per_call"]
        caches: dict[str, np.ndarray] = {}
        for index, lo in enumerate(range(0, latents.shape[2], per_call)):
            name = stream["first"] if index == 0 else stream["next"]
            latent_in = self._in(name, "latent")
            feeds = {latent_in["name"]: np.ascontiguousarray(latents[:, :, lo : lo + per_call], dtype=latent_in["dtype"])}
            feeds.update({tensor: caches[role] for role, tensor in self.manifest.caches(name, "inputs").items()})
            outputs = self._run(name, feeds)
            caches = {role: outputs[tensor] for role, tensor in self.manifest.caches(name, "outputs").items()}
            chunk = outputs[self._out(name, "frames")]
            del outputs, feeds  # the old caches go with them
            yield chunk
            del chunk

    def _in(self, component: str, role: str) -> dict[str, Any]:
        """The input of a component that plays `role`."""
        return self.manifest.tensor(component, role, "inputs")

    def _out(self, component: str, role: str) -> str:
        """The name of the output of a component that plays `role`."""
        return str(self.manifest.tensor(component, role, "outputs")["name"])

    def close(self) -> None:
        """Release every engine (call it once no call is running)."""
        with self._lock:
            for session in self.sessions.values():
                session.close()
            self.sessions.clear()
            self._users.clear()


def _as_list(value: str | list[str], count: int | None = None) -> list[str]:
    """A prompt or list of prompts as a list (a single negative is repeated `count` times)."""
    items = [value] if isinstance(value, str) else list(value)
    if count is not None and len(items) == 1:
        items = items * count
    if count is not None and len(items) != count:
        raise T2VError(f"got {len(items)} negative prompts for {count} prompts")
    return items


def _name(tensor: dict[str, Any]) -> str:
    """A manifest tensor's graph name."""
    return str(tensor["name"])


def _as(array: np.ndarray, tensor: dict[str, Any]) -> np.ndarray:
    """An array in the dtype the graph takes (no copy when it already is)."""
    return array.astype(tensor["dtype"], copy=False)


def _has_role(tensors: list[dict[str, Any]], role: str) -> bool:
    """Whether one of these manifest tensors plays `role`."""
    return any(t.get("role") == role for t in tensors)


def _to_uint8(images: np.ndarray) -> np.ndarray:
    """[-1, 1] floats -> uint8, rounded the way diffusers' video processor does."""
    return (np.clip(images / 2 + 0.5, 0.0, 1.0) * 255).round().astype(np.uint8)
