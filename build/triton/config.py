"""config.pbtxt from a target's manifest: inputs, outputs, instances, batching, priorities, queue, cache, versions.

The inputs are `Pipeline.generate`'s arguments, one value per video (a row of the batch dimension). Only the
prompt is required: a missing optional input is None, which the runtime reads as the manifest's default.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from t2vtrt.runtime.errors import T2VError
from t2vtrt.runtime.manifest import Manifest

# (name, Triton data type, optional, what it is): Pipeline.generate's arguments, in its order.
INPUTS = (
    ("prompt", "TYPE_STRING", False, "UTF-8 text"),
    ("negative_prompt", "TYPE_STRING", True, "UTF-8 text to steer away from (default empty)"),
    ("seed", "TYPE_INT64", True, ">= 0 (default 0): numpy default_rng(seed) draws the initial latents"),
    ("steps", "TYPE_INT32", True, "sampler steps (default: the manifest's)"),
    ("guidance", "TYPE_FP32", True, "classifier-free guidance scale; <= 1 turns it off (default: the manifest's)"),
    ("frames", "TYPE_INT32", True, "video length (default: the manifest's)"),
    ("height", "TYPE_INT32", True, "pixels, a multiple of the model's downsampling (default: the manifest's)"),
    ("width", "TYPE_INT32", True, "pixels, a multiple of the model's downsampling (default: the manifest's)"),
    ("sampler", "TYPE_STRING", True, "one of the manifest's samplers (default: the manifest's)"),
)
# (name, data type, dims after the batch dimension, what it is)
OUTPUTS = (
    ("video", "TYPE_UINT8", (-1, -1, -1, 3), "uint8 frames (F, H, W, RGB), byte-identical to Pipeline.generate's"),
    ("timings", "TYPE_STRING", (1,), "JSON: seconds per engine, loop, total, and how many videos shared the batch"),
    ("warnings", "TYPE_STRING", (1,), "JSON list of lines (e.g. a prompt cut at the text encoder's length)"),
)
PRIORITY_REALTIME, PRIORITY_BATCH = 1, 2  # Triton: 1 is served first


@dataclass(frozen=True)
class ServeSettings:
    """What `t2vtrt triton-repo` decides beyond the manifest (CLI options; docs/serving.md#config-knobs)."""

    name: str | None = None  # Triton model name; default: the manifest's model name
    version: int = 1
    instances: int = 1  # model instances (processes) per device
    dynamic_batching: bool = True
    max_queue_delay_ms: float = 20.0  # how long the batcher may hold a request to fill a batch
    max_queue_size: int = 32  # queued requests beyond this are rejected at once (0: unbounded)
    queue_timeout_ms: int = 0  # a queued request older than this is rejected (0: never); clients may set their own
    cache: bool = True  # the server's response cache for identical requests
    precision: str | None = None  # the denoiser precision this version runs (default: the manifest's)
    threads: int = 0  # ONNX Runtime threads per instance (0: ONNX Runtime's default, every core)
    python_env: Path | None = None  # EXECUTION_ENV_PATH: the Python environment the backend stub runs in


def model_name(manifest: Manifest, settings: ServeSettings) -> str:
    """The Triton model name: --name, else the manifest's model name; refused when Triton cannot use it."""
    name = settings.name or manifest.data["model"]["name"]
    if not name or name in {".", ".."} or any(c in name for c in '/\\"\n'):
        raise T2VError(f"{name!r} cannot be a Triton model name (it names a folder): pass --name with letters, digits, - or _")
    return name


def max_batch_size(manifest: Manifest) -> int:
    """Videos per execution: the top of the engines' batch range (the denoiser holds twice that with guidance)."""
    return int(manifest.data["ranges"]["batch"][2])


def instance_kind(manifest: Manifest) -> str:
    """KIND_GPU for TensorRT engines, KIND_CPU for the cpu target."""
    return "KIND_GPU" if manifest.backend == "tensorrt" else "KIND_CPU"


def signature(manifest: Manifest) -> dict[str, Any]:
    """What every version of one model must share, since they share one config.pbtxt."""
    return {"max_batch_size": max_batch_size(manifest), "instance_kind": instance_kind(manifest), "family": manifest.data["model"]["family"]}


def build_config(manifest: Manifest, settings: ServeSettings, manifest_sha256: str) -> str:
    """The config.pbtxt text."""
    name = model_name(manifest, settings)
    batch = max_batch_size(manifest)
    lines = [
        f"# Written by `t2vtrt triton-repo` from manifest.json sha256 {manifest_sha256} (model {manifest.data['model']['name']},",
        f"# target {manifest.data['target']['name']}); regenerate it rather than editing. Knobs: docs/serving.md.",
        f"name: {_quote(name)}",
        'backend: "python"',
        f"max_batch_size: {batch}",
        "# Every version folder is served; a request without a version gets the highest (A/B: pin one per client).",
        "version_policy: { all { } }",
        "input [",
        ",\n".join(_input(*spec) for spec in INPUTS),
        "]",
        "output [",
        ",\n".join(_output(*spec) for spec in OUTPUTS),
        "]",
        f"instance_group [ {{ count: {settings.instances} kind: {instance_kind(manifest)} }} ]",
    ]
    if settings.dynamic_batching:
        lines += _dynamic_batching(batch, settings)
    lines.append(f"response_cache {{ enable: {str(settings.cache).lower()} }}")
    parameters = {"threads": str(settings.threads)}
    if settings.python_env is not None:
        parameters["EXECUTION_ENV_PATH"] = str(settings.python_env)
    lines += [f"parameters: {{ key: {_quote(k)} value: {{ string_value: {_quote(v)} }} }}" for k, v in parameters.items()]
    return "\n".join(lines) + "\n"


def _dynamic_batching(batch: int, settings: ServeSettings) -> list[str]:
    """The dynamic batcher: up to `batch` videos, two priority levels, a bounded queue that rejects past its size."""
    return [
        "# Triton gathers up to max_batch_size videos; model.py runs those whose settings match as one denoiser batch.",
        "dynamic_batching {",
        f"  preferred_batch_size: [ {batch} ]",
        f"  max_queue_delay_microseconds: {int(settings.max_queue_delay_ms * 1000)}",
        f"  # priority {PRIORITY_REALTIME}: real-time requests, served first; {PRIORITY_BATCH} (the default): batch work.",
        f"  priority_levels: {PRIORITY_BATCH}",
        f"  default_priority_level: {PRIORITY_BATCH}",
        "  default_queue_policy {",
        f"    max_queue_size: {settings.max_queue_size}",
        "    timeout_action: REJECT",
        f"    default_timeout_microseconds: {settings.queue_timeout_ms * 1000}",
        "    allow_timeout_override: true",
        "  }",
        "}",
    ]


def _input(name: str, dtype: str, optional: bool, doc: str) -> str:
    """One input entry, its meaning as a comment."""
    flag = " optional: true" if optional else ""
    return f"  # {doc}\n  {{ name: {_quote(name)} data_type: {dtype} dims: [ 1 ]{flag} }}"


def _output(name: str, dtype: str, dims: tuple[int, ...], doc: str) -> str:
    """One output entry, its meaning as a comment."""
    return f"  # {doc}\n  {{ name: {_quote(name)} data_type: {dtype} dims: [ {', '.join(map(str, dims))} ] }}"


def _quote(text: str) -> str:
    """A protobuf text-format string (JSON's escapes for quote and backslash are the same)."""
    return json.dumps(text, ensure_ascii=False)
