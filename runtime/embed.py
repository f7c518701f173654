"""The Python side of the C ABI (libt2vtrt): open a Pipeline, generate, map every error to a status + one line.

libt2vtrt calls only the functions here. Each returns `(status, message, value)` and never raises, so the
library never has to interpret Python exceptions: the status is decided here, by the phase that failed
(the target directory's existence, the manifest, the request's checks, the engines), not by message text.
The status numbers mirror `t2v_status` in include/t2vtrt.h (tests/capi checks they agree).
"""

from __future__ import annotations

import enum
import os
from pathlib import Path
from typing import Any, Callable, overload

import numpy as np

from t2vtrt.runtime.errors import T2VError
from t2vtrt.runtime.manifest import load_manifest
from t2vtrt.runtime.pipeline import COMPONENTS, Pipeline
from t2vtrt.runtime.request import check_prompts, check_sampler, resolve_request
from t2vtrt.runtime.video import check_fps

ABI_VERSION = 1  # T2V_ABI_VERSION in include/t2vtrt.h


class Status(enum.IntEnum):
    """t2v_status values (include/t2vtrt.h)."""

    OK = 0
    INVALID_ARGUMENT = 1
    NOT_FOUND = 2
    CORRUPT_ARTIFACT = 3
    OUT_OF_RANGE = 4
    CANCELLED = 5
    BACKEND_FAILURE = 6
    RUNTIME_UNAVAILABLE = 7
    OUT_OF_MEMORY = 8
    BUSY = 9
    INTERNAL = 10


class Cancelled(Exception):
    """Raised from the progress callback when the host asks to stop; it unwinds the loop like any error."""


Result = tuple[int, str, Any]


def _one_line(exc: BaseException) -> str:
    """An exception as one line: its message (T2VError is already one line), else its type and first line."""
    if isinstance(exc, T2VError):
        return str(exc)
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _failure(status: Status, exc: BaseException) -> Result:
    """A failed call's result; MemoryError is always OUT_OF_MEMORY whatever the phase."""
    if isinstance(exc, MemoryError):
        return int(Status.OUT_OF_MEMORY), "out of memory: " + (_one_line(exc) if str(exc) else "free memory or use smaller sizes"), None
    return int(status), _one_line(exc), None


@overload
def _text(raw: bytes | None, what: str, default: str) -> str: ...


@overload
def _text(raw: bytes | None, what: str, default: None) -> str | None: ...


def _text(raw: bytes | None, what: str, default: str | None) -> str | None:
    """UTF-8 bytes from C as str (None -> default); undecodable bytes are the caller's mistake."""
    if raw is None:
        return default
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise T2VError(f"the {what} is not valid UTF-8 (undecodable byte at offset {exc.start}): pass the text in UTF-8") from None


def open_pipeline(target_dir: bytes, precision: bytes | None, low_vram: bool, threads: int, verify_hashes: bool) -> Result:
    """t2v_pipeline_open: (status, message, Pipeline)."""
    try:
        root = Path(os.fsdecode(target_dir))
        wanted = _text(precision, "precision", None)
    except (T2VError, ValueError) as exc:
        return _failure(Status.INVALID_ARGUMENT, exc)
    if not (root / "manifest.json").is_file():
        try:
            load_manifest(root, verify_hashes=False)  # raises the runtime's own message for a missing target
        except T2VError as exc:
            return _failure(Status.NOT_FOUND, exc)
    try:
        manifest = load_manifest(root, verify_hashes=verify_hashes)
    except T2VError as exc:
        return _failure(Status.CORRUPT_ARTIFACT, exc)
    except Exception as exc:  # noqa: BLE001 - an unreadable file is still a one-line status, never a crash
        return _failure(Status.CORRUPT_ARTIFACT, exc)
    try:
        manifest.variant("denoiser", wanted)  # an unknown precision is the caller's argument, not a broken build
    except T2VError as exc:
        return _failure(Status.INVALID_ARGUMENT, exc)
    options: dict[str, Any] = {"threads": threads} if threads > 0 else {}
    try:
        return int(Status.OK), "", Pipeline(manifest, wanted, low_vram=low_vram, **options)
    except BaseException as exc:  # noqa: BLE001 - engines that fail to open
        return _failure(Status.BACKEND_FAILURE, exc)


def generate(
    pipe: Pipeline,
    prompt: bytes | None,
    negative: bytes | None,
    steps: int | None,
    guidance: float | None,
    frames: int | None,
    height: int | None,
    width: int | None,
    seed: int,
    sampler: bytes | None,
    fps: int | None,
    progress: Callable[[int, int], bool] | None,
) -> Result:
    """t2v_generate: (status, message, (uint8 (F, H, W, 3) array, fps, timings dict)); None = the manifest's default."""
    try:
        prompt_text = _text(prompt, "prompt", "")
        negative_text = _text(negative, "negative prompt", "")
        sampler_name = _text(sampler, "sampler", None)
        check_prompts([prompt_text], "prompt")
        check_prompts([negative_text], "negative prompt", allow_empty=True)
        if sampler_name is not None:
            check_sampler(pipe.manifest, sampler_name)
    except T2VError as exc:
        return _failure(Status.INVALID_ARGUMENT, exc)
    try:  # what is left are numbers: steps, guidance, sizes, seed, fps outside what the engines/sampler take
        resolve_request(pipe.manifest, [prompt_text], [negative_text], steps, guidance, frames, height, width, seed, sampler_name)
        fps_out = check_fps(pipe.manifest.data["defaults"].get("fps", 8) if fps is None else fps)
    except T2VError as exc:
        return _failure(Status.OUT_OF_RANGE, exc)
    callback = None
    if progress is not None:

        def callback(step: int, total: int) -> None:
            """Forward to the host's callback; a non-zero return stops the call."""
            if progress(step, total):
                raise Cancelled(f"cancelled by the progress callback at step {step} of {total}")

    try:
        result = pipe.generate(prompt_text, negative_text, steps, guidance, frames, height, width, seed, sampler_name, callback=callback)
    except Cancelled as exc:
        return int(Status.CANCELLED), str(exc), None
    except T2VError as exc:
        return _failure(Status.BACKEND_FAILURE, exc)
    except BaseException as exc:  # noqa: BLE001 - the engines' own errors
        return _failure(Status.BACKEND_FAILURE, exc)
    t = result.timings
    timings = {"total_s": t.total_s, "loop_s": t.loop_s, **{f"{c}_s": t.engine_s.get(c, 0.0) for c in COMPONENTS}}
    return int(Status.OK), "", (np.ascontiguousarray(result.frames, dtype=np.uint8), fps_out, timings)


def close_pipeline(pipe: Pipeline) -> Result:
    """t2v_pipeline_close: release the engines."""
    try:
        pipe.close()
    except BaseException as exc:  # noqa: BLE001
        return _failure(Status.BACKEND_FAILURE, exc)
    return int(Status.OK), "", None
