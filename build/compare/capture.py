"""The FP32 ONNX reference pipeline: records every graph's inputs and yields the reference videos."""

from __future__ import annotations

import copy
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from t2vtrt.build.artifacts import ArtifactPaths
from t2vtrt.runtime.backends import Feeds
from t2vtrt.runtime.errors import T2VError
from t2vtrt.runtime.files import atomic_path
from t2vtrt.runtime.manifest import Manifest
from t2vtrt.runtime.pipeline import EngineCallHook, Pipeline

EVAL_PATH = Path(__file__).with_name("eval.toml")


@dataclass(frozen=True)
class EvalSet:
    """Prompts x seeds the comparisons run on."""

    prompts: tuple[str, ...]
    seeds: tuple[int, ...]
    negative_prompt: str = ""
    steps: int | None = None
    denoiser_samples: int = 3
    adherence: bool = False  # also score prompt adherence (models trained on build/shapes captions)

    def cases(self) -> list[tuple[str, str, int]]:
        """(key, prompt, seed) per video; the key names it in reports and golden files."""
        return [(f"p{i}-s{seed}", prompt, seed) for i, prompt in enumerate(self.prompts) for seed in self.seeds]

    def to_json(self) -> dict[str, Any]:
        """The report / golden form."""
        return {
            "prompts": list(self.prompts),
            "seeds": list(self.seeds),
            "negative_prompt": self.negative_prompt,
            "steps": self.steps,
            "denoiser_samples": self.denoiser_samples,
            "adherence": self.adherence,
        }


def default_eval_path(model_name: str) -> Path:
    """eval-<model>.toml beside eval.toml when the model has its own eval set, else eval.toml."""
    own = EVAL_PATH.with_name(f"eval-{model_name}.toml")
    return own if own.is_file() else EVAL_PATH


def load_eval_set(path: str | Path | None = None) -> EvalSet:
    """Read eval.toml (or another file of the same shape): explicit `prompts`, or a shipped `prompt_set` / `prompt_file`."""
    data = tomllib.loads(Path(path or EVAL_PATH).read_text())
    if "prompts" in data:
        prompts = list(data["prompts"])
    else:
        from t2vtrt.calibration.prompts import load_prompts

        prompts = load_prompts(data.get("prompt_set", "eval"), int(data.get("prompt_count", 2)), data.get("prompt_file"))
    return EvalSet(
        tuple(prompts),
        tuple(int(s) for s in data["seeds"]),
        data.get("negative_prompt", ""),
        data.get("steps"),
        int(data.get("denoiser_samples", 3)),
        bool(data.get("adherence", False)),
    )


@dataclass(frozen=True)
class Settings:
    """What every side of a compare generates with: the eval set's steps, else the manifest's defaults."""

    steps: int
    guidance: float
    sampler: str
    frames: int
    height: int
    width: int

    @classmethod
    def of(cls, manifest: Manifest, eval_set: EvalSet) -> "Settings":
        """The eval set's steps over the manifest's defaults and default sampler."""
        d = manifest.data["defaults"]
        steps = eval_set.steps or d["steps"]
        return cls(int(steps), float(d["guidance"]), manifest.data["scheduler"]["default_sampler"], d["frames"], d["height"], d["width"])


@dataclass
class ReferenceCapture:
    """What the reference pipeline saw and made: per component a list of feed dicts, per case its initial latents and video."""

    settings: Settings
    inputs: dict[str, list[Feeds]] = field(default_factory=dict)
    latents: dict[str, np.ndarray] = field(default_factory=dict)  # case -> (1, C, F', h, w): every side starts from these
    videos: dict[str, np.ndarray] = field(default_factory=dict)


def reference_manifest(manifest: Manifest, paths: ArtifactPaths) -> Manifest:
    """The target's manifest with every component pointed at its exported FP32 graph (onnx/<component>.onnx)."""
    data = copy.deepcopy(manifest.data)
    for name, component in data["components"].items():
        graph = paths.onnx(name)
        if not graph.is_file():
            raise T2VError(f"{graph} is missing: the FP32 reference of compare is the exported graph; run `t2vtrt export` first")
        # An absolute file name: Manifest.path() joins it onto the target dir, which keeps it as is.
        component["variants"] = {
            "fp32": {"file": str(graph.resolve()), "backend": "onnxruntime", "precision": "fp32", "sha256": "", "bytes": graph.stat().st_size}
        }
    data["defaults"]["precision"] = "fp32"
    return Manifest(data, manifest.root)


def capture_reference(manifest: Manifest, paths: ArtifactPaths, eval_set: EvalSet) -> ReferenceCapture:
    """Run the reference pipeline on every case: record every component's inputs, keep the latents and videos."""
    pipe = Pipeline(reference_manifest(manifest, paths), precision="fp32")
    settings = Settings.of(manifest, eval_set)
    components = list(manifest.data["components"])
    denoisers = {name for name, _ in manifest.denoisers}  # called once per step: only a spread of their calls is kept
    capture = ReferenceCapture(settings, {c: [] for c in components})
    try:
        for key, prompt, seed in eval_set.cases():
            # The seed's latents as the runtime draws them, passed explicitly so every side (variants, diffusers) shares them.
            shape = pipe.latent_shape(1, settings.frames, settings.height, settings.width)
            capture.latents[key] = np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)
            recorded: dict[str, list[Feeds]] = {c: [] for c in components}
            with pipe.recording(_keep_into(recorded)):
                capture.videos[key] = generate_one(pipe, prompt, eval_set, settings, capture.latents[key])
            for component, calls in recorded.items():
                kept = _spread(len(calls), eval_set.denoiser_samples) if component in denoisers else range(len(calls))
                capture.inputs[component] += [calls[i] for i in kept]
    finally:
        pipe.close()
    return capture


def generate_one(pipe: Pipeline, prompt: str, eval_set: EvalSet, settings: Settings, latents: np.ndarray) -> np.ndarray:
    """One case's uint8 (F, H, W, 3) video at the compare's settings from the case's latents."""
    s = settings
    return pipe(
        prompt,
        negative_prompt=eval_set.negative_prompt,
        steps=s.steps,
        guidance=s.guidance,
        frames=s.frames,
        height=s.height,
        width=s.width,
        sampler=s.sampler,
        latents=latents,
    )


def _keep_into(recorded: dict[str, list[Feeds]]) -> EngineCallHook:
    """A Pipeline.recording hook appending a copy of every engine call's feeds to recorded[component]."""

    def keep(component: str, feeds: Feeds) -> None:
        recorded[component].append({k: np.array(v, copy=True) for k, v in feeds.items()})

    return keep


def _spread(count: int, samples: int) -> list[int]:
    """`samples` indices evenly spaced over range(count), first and last included."""
    return sorted({int(round(x)) for x in np.linspace(0, count - 1, min(samples, count))})


def generate_videos(target_dir: Path, precision: str, eval_set: EvalSet, capture: ReferenceCapture) -> dict[str, np.ndarray]:
    """The target's own pipeline at one precision (components without it fall back to fp32), per case, from its latents."""
    pipe = Pipeline.from_dir(target_dir, precision=precision, verify_hashes=False)  # compare verified them already
    try:
        return {key: generate_one(pipe, prompt, eval_set, capture.settings, capture.latents[key]) for key, prompt, _ in eval_set.cases()}
    finally:
        pipe.close()


def save_inputs(path: Path, feeds: list[Feeds]) -> None:
    """Feed dicts as polygraphy input JSON (what `polygraphy run --load-inputs` reads), atomically."""
    from polygraphy.json import save_json

    with atomic_path(path) as tmp:
        save_json(feeds, str(tmp))


def load_inputs(path: Path) -> list[Feeds]:
    """Inverse of save_inputs."""
    from polygraphy.json import load_json

    return [dict(feed) for feed in load_json(str(path))]
