"""Triton Python-backend model written by `t2vtrt triton-repo`: t2v-trt's thin runtime over the engines beside it.

One instance is one process holding one Pipeline. Triton's dynamic batcher hands `execute` up to max_batch_size
videos; those whose settings can share a denoiser batch (same steps, guidance, frames, size and sampler) run as one
Pipeline call, each video with its own seed's latents, so its frames are the same whatever it was batched with.
A bad request gets the runtime's one-line error and the rest of the batch still runs. Imports numpy and
t2vtrt.runtime only: no torch. Regenerate it with `t2vtrt triton-repo` rather than editing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import triton_python_backend_utils as pb_utils

from t2vtrt.runtime.backends import first_line
from t2vtrt.runtime.errors import T2VError
from t2vtrt.runtime.manifest import Manifest
from t2vtrt.runtime.pipeline import Pipeline, truncation_warnings
from t2vtrt.runtime.request import Request, resolve_request

HERE = Path(__file__).resolve().parent
NUMBERS: dict[str, Callable[[Any], Any]] = {"seed": int, "steps": int, "guidance": float, "frames": int, "height": int, "width": int}
TEXTS = ("prompt", "negative_prompt", "sampler")
Item = tuple[int, int, Request]  # (request index, row, checked request)


class TritonPythonModel:
    """The model Triton loads: `initialize` once per instance, `execute` per batch, `finalize` at unload."""

    def initialize(self, args: dict[str, str]) -> None:
        """Open the engines (hash-checked) at this version's precision."""
        config = json.loads(args["model_config"])
        threads = int(config.get("parameters", {}).get("threads", {}).get("string_value") or 0)
        precision = json.loads((HERE / "version.json").read_text()).get("precision")
        options = {"threads": threads} if threads else {}
        self.pipe = Pipeline.from_dir(HERE / "engines", precision=precision, **options)
        self.max_batch = int(self.pipe.manifest.data["ranges"]["batch"][2])

    def execute(self, requests: list[Any]) -> list[Any]:
        """One response per request, in order: videos, or the one-line error that request earned."""
        errors: dict[int, Any] = {}  # request index -> its TritonError
        items: list[Item] = []
        for index, request in enumerate(requests):
            try:
                items += [(index, row, req) for row, req in enumerate(parse(self.pipe.manifest, request))]
            except T2VError as exc:  # the caller's mistake: INVALID_ARG (HTTP 400)
                errors[index] = pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG)
        results: dict[tuple[int, int], tuple[np.ndarray, str, str]] = {}
        for group in batches([item for item in items if item[0] not in errors], self.max_batch):
            try:
                results.update(self.run(group))
            except Exception as exc:  # noqa: BLE001 - the whole group failed; every request in it is told why
                message = str(exc) if isinstance(exc, T2VError) else f"{type(exc).__name__}: {first_line(exc)}"
                errors.update({index: pb_utils.TritonError(message, pb_utils.TritonError.INTERNAL) for index, _, _ in group})
        return [respond(index, errors, results, items) for index in range(len(requests))]

    def run(self, group: list[Item]) -> dict[tuple[int, int], tuple[np.ndarray, str, str]]:
        """One Pipeline call for videos that share their settings; per video its frames, timings and warnings."""
        first = group[0][2]
        shape = self.pipe.latent_shape(1, first.frames, first.height, first.width)
        # Each video's own draw, as Pipeline would make it alone: batching never changes a video.
        latents = np.concatenate([np.random.default_rng(req.seed).standard_normal(shape, dtype=np.float32) for _, _, req in group])
        result = self.pipe.generate(
            [req.prompts[0] for _, _, req in group],
            [req.negatives[0] for _, _, req in group],
            steps=first.steps,
            guidance=first.guidance,
            frames=first.frames,
            height=first.height,
            width=first.width,
            sampler=first.sampler,
            latents=latents,
        )
        t = result.timings
        timings = json.dumps(
            {
                **{f"{name}_s": round(s, 6) for name, s in t.engine_s.items()},
                "loop_s": round(t.loop_s, 6),
                "total_s": round(t.total_s, 6),
                "batch": len(group),
            }
        )
        out = {}
        for position, (index, row, req) in enumerate(group):
            negatives = req.negatives if req.guidance > 1.0 else []
            warnings = json.dumps(truncation_warnings(self.pipe.tokenizer, req.prompts, negatives))
            out[(index, row)] = (result.frames[position], timings, warnings)
        return out

    def finalize(self) -> None:
        """Release the engines."""
        self.pipe.close()


def parse(manifest: Manifest, request: Any) -> list[Request]:
    """A Triton request's rows as checked runtime requests (only an absent input means the default)."""
    values = {name: _column(request, name) for name in (*TEXTS, *NUMBERS)}
    rows = len(values["prompt"])
    checked = []
    for row in range(rows):
        raw = {name: None if column is None else column[row] for name, column in values.items()}
        numbers = {name: None if raw[name] is None else cast(raw[name]) for name, cast in NUMBERS.items()}
        checked.append(
            resolve_request(
                manifest,
                [_text(raw["prompt"])],
                [_text(raw["negative_prompt"] or b"")],
                numbers["steps"],
                numbers["guidance"],
                numbers["frames"],
                numbers["height"],
                numbers["width"],
                0 if numbers["seed"] is None else numbers["seed"],
                None if raw["sampler"] is None else _text(raw["sampler"]),
            )
        )
    sizes = {(req.frames, req.height, req.width) for req in checked}
    if len(sizes) > 1:
        raise T2VError(
            "the rows of one request must share frames, height and width (one output tensor): send videos of different sizes as separate requests"
        )
    return checked


def batches(items: list[Item], limit: int) -> Iterator[list[Item]]:
    """Items whose settings can share a denoiser batch, in arrival order, at most `limit` (the engines' batch) at a time."""
    groups: dict[tuple[Any, ...], list[Item]] = {}
    for item in items:
        req = item[2]
        groups.setdefault((req.steps, req.guidance, req.frames, req.height, req.width, req.sampler), []).append(item)
    for group in groups.values():
        for start in range(0, len(group), limit):
            yield group[start : start + limit]


def respond(index: int, errors: dict[int, Any], results: dict[tuple[int, int], tuple[np.ndarray, str, str]], items: list[Item]) -> Any:
    """The response of request `index`: its rows' outputs stacked, or its error."""
    if index in errors:
        return pb_utils.InferenceResponse(error=errors[index])
    rows = [results[(i, row)] for i, row, _ in items if i == index]
    return pb_utils.InferenceResponse(
        [
            pb_utils.Tensor("video", np.stack([video for video, _, _ in rows])),
            pb_utils.Tensor("timings", np.array([[t.encode()] for _, t, _ in rows], dtype=np.object_)),
            pb_utils.Tensor("warnings", np.array([[w.encode()] for _, _, w in rows], dtype=np.object_)),
        ]
    )


def _column(request: Any, name: str) -> np.ndarray | None:
    """An input's values, one per row, or None when the request left it out."""
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy().reshape(-1)


def _text(raw: Any) -> str:
    """Bytes as text; undecodable bytes are kept as surrogates so the runtime's UTF-8 check names the character."""
    return raw.decode("utf-8", "surrogateescape") if isinstance(raw, bytes) else str(raw)
