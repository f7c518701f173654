"""The FP32 ONNX reference pipeline: records every graph's inputs and yields the reference videos."""

from __future__ import annotations

import copy
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from t2vtrt.build.artifacts import COMPONENTS, ArtifactPaths
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


@dataclass
class ReferenceCapture:
    """What the reference pipeline saw and made: per component a list of feed dicts, per case a video."""

    inputs: dict[str, list[Feeds]] = field(default_factory=lambda: {c: [] for c in COMPONENTS})
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
    """Run the reference pipeline on every case: record graph inputs, keep the videos."""
    pipe = Pipeline(reference_manifest(manifest, paths), precision="fp32")
    capture = ReferenceCapture()
    try:
        for key, prompt, seed in eval_set.cases():
            recorded: dict[str, list[Feeds]] = {c: [] for c in COMPONENTS}
            with pipe.recording(_keep_into(recorded)):
                capture.videos[key] = pipe(prompt, negative_prompt=eval_set.negative_prompt, steps=eval_set.steps, seed=seed)
            denoiser = recorded["denoiser"]
            capture.inputs["text_encoder"] += recorded["text_encoder"]
            capture.inputs["denoiser"] += [denoiser[i] for i in _spread(len(denoiser), eval_set.denoiser_samples)]
            capture.inputs["vae_decoder"] += recorded["vae_decoder"]
    finally:
        pipe.close()
    return capture


def _keep_into(recorded: dict[str, list[Feeds]]) -> EngineCallHook:
    """A Pipeline.recording hook appending a copy of every engine call's feeds to recorded[component]."""

    def keep(component: str, feeds: Feeds) -> None:
        recorded[component].append({k: np.array(v, copy=True) for k, v in feeds.items()})

    return keep


def _spread(count: int, samples: int) -> list[int]:
    """`samples` indices evenly spaced over range(count), first and last included."""
    return sorted({int(round(x)) for x in np.linspace(0, count - 1, min(samples, count))})


def generate_videos(target_dir: Path, precision: str, eval_set: EvalSet) -> dict[str, np.ndarray]:
    """The target's own pipeline at one precision (components without it fall back to fp32), per case."""
    pipe = Pipeline.from_dir(target_dir, precision=precision, verify_hashes=False)  # compare verified them already
    try:
        return {
            key: pipe(prompt, negative_prompt=eval_set.negative_prompt, steps=eval_set.steps, seed=seed) for key, prompt, seed in eval_set.cases()
        }
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
