"""The end-to-end oracle: the family's diffusers pipeline (`Family.reference`) on the compare's prompts, seeds and latents.

The FP32 ONNX reference tells how far a variant moved from the exported graphs; this tells how far the shipped video
is from what diffusers itself makes on the same weights (unet3d's text-to-video loop, Wan's WanPipeline).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from t2vtrt.build.artifacts import ArtifactPaths
from t2vtrt.build.compare import gates
from t2vtrt.build.compare.capture import EvalSet, ReferenceCapture
from t2vtrt.build.compare.frames import psnr_per_frame, ssim_per_frame
from t2vtrt.build.compare.gates import Check, skipped
from t2vtrt.build.compare.tolerances import diffusers_thresholds
from t2vtrt.runtime.manifest import Manifest

KIND = "diffusers-video"
ONNX_FP32 = "onnx-fp32"  # the FP32 ONNX reference's own videos, checked too: they tell export error from a variant's


def oracle_model_dir(manifest: Manifest, paths: ArtifactPaths) -> tuple[Path | None, str]:
    """The diffusers directory the target was built from (export's `source`, else artifacts/<model>/model), or why none."""
    source = manifest.data["model"].get("source")
    for candidate in (Path(source) if source else None, paths.model_dir):
        if candidate is not None and candidate.is_dir():
            return candidate, ""
    return None, f"the model directory {source or paths.model_dir} is gone: restore it (or re-export) to compare with diffusers"


def model_mismatch(manifest: Manifest, model_dir: Path) -> str:
    """'' when model_dir still holds the weights the target was built from, else the one-line problem."""
    from t2vtrt.build.models import model_hash

    built = manifest.data["model"]["hash"]
    found = model_hash(model_dir)
    if found == built:
        return ""
    return f"{model_dir} now hashes {found[:12]}, the target was built from {built[:12]}: re-export and rebuild, or restore that model"


def oracle_videos(family: str, model_dir: Path, eval_set: EvalSet, capture: ReferenceCapture) -> tuple[dict[str, np.ndarray], str]:
    """Per case the family reference's uint8 (F, H, W, 3) video from the case's latents; ({}, why) when it cannot run."""
    from t2vtrt.build.families import get_family

    oracle: Any = get_family(family).reference(model_dir)
    s = capture.settings
    if s.sampler not in oracle.SAMPLERS:
        return {}, f"the {family} reference reproduces samplers {', '.join(oracle.SAMPLERS)}, not the manifest's default {s.sampler!r}"
    videos = {}
    for key, prompt, _ in eval_set.cases():
        _, video = oracle.generate(prompt, eval_set.negative_prompt, s.steps, s.guidance, capture.latents[key], s.sampler)
        videos[key] = video[0]
    return videos, ""


def oracle_checks(
    manifest: Manifest,
    paths: ArtifactPaths,
    eval_set: EvalSet,
    capture: ReferenceCapture,
    videos: dict[str, dict[str, np.ndarray]],
    tolerances: dict[str, Any],
) -> tuple[list[Check], dict[str, np.ndarray]]:
    """Each generated precision's videos vs the diffusers pipeline's, per frame, gated by [diffusers.<precision>]; and those videos."""
    precisions = list(videos)
    model_dir, why = oracle_model_dir(manifest, paths)
    if model_dir is None:
        return [skipped(KIND, subject(p), p, why) for p in precisions], {}
    mismatch = model_mismatch(manifest, model_dir)
    if mismatch:
        return [_failed(p, mismatch) for p in precisions], {}
    reference, why = oracle_videos(manifest.data["model"]["family"], model_dir, eval_set, capture)
    if not reference:
        return [skipped(KIND, subject(p), p, why) for p in precisions], {}
    return [gate_against(reference, p, videos[p], tolerances) for p in precisions], reference


def gate_against(reference: dict[str, np.ndarray], precision: str, videos: dict[str, np.ndarray], tolerances: dict[str, Any]) -> Check:
    """One precision's videos vs the diffusers videos: per-frame PSNR and SSIM, min and mean gated."""
    check = Check(KIND, subject(precision), precision)
    psnr = {k: psnr_per_frame(reference[k], v) for k, v in videos.items()}
    ssim = {k: ssim_per_frame(reference[k], v) for k, v in videos.items()}
    thresholds = diffusers_thresholds(tolerances, precision)
    gates.gate_video(check, psnr, ssim, thresholds or {})
    check.thresholds = thresholds
    if thresholds is None:  # nothing passes without a threshold
        check.fail(f"no thresholds for the {precision} video vs diffusers in the tolerances file; measure it and add [diffusers.{precision}]")
    return check


def subject(precision: str) -> str:
    """The check's name in reports and failure lines."""
    return f"video {precision} vs diffusers"


def _failed(precision: str, message: str) -> Check:
    """A check that could not compare because its inputs are wrong (not skipped: the oracle exists but differs)."""
    check = Check(KIND, subject(precision), precision)
    check.fail(message)
    return check
