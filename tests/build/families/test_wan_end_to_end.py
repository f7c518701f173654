"""wan-tiny through every stage after export: calibrate, quantize (gated), the cpu target with INT8, generate, compare."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from t2vtrt.build.artifacts import ArtifactPaths
from t2vtrt.build.compare.capture import EvalSet
from t2vtrt.build.compare.gates import PASSED


@pytest.fixture(scope="module")
def wan_int8(wan_paths: ArtifactPaths, tmp_path_factory: pytest.TempPathFactory) -> tuple[ArtifactPaths, dict[str, Any]]:
    """A private copy of wan-tiny calibrated, quantized and built for the cpu target with INT8; and quantize's summary."""
    from t2vtrt.build.engines.cpu import build_cpu_target
    from t2vtrt.calibration.stage import run_calibrate, run_quantize

    paths = ArtifactPaths(tmp_path_factory.mktemp("wan-int8") / "wan-tiny")
    shutil.copytree(wan_paths.root, paths.root, ignore=shutil.ignore_patterns("engines", "calib"))  # the session's copy stays FP32
    run_calibrate(paths)
    summary = run_quantize(paths)
    build_cpu_target(paths)
    return paths, summary


def test_wan_tiny_int8_end_to_end(wan_int8: tuple[ArtifactPaths, dict[str, Any]]) -> None:
    """The DiT calibrates in block x kind groups, passes the quantize gate, ships as int8 and generates a video."""
    from t2vtrt.runtime.pipeline import Pipeline

    paths, summary = wan_int8
    plan = json.loads((paths.calib_dir / "precision_plan.json").read_text())
    names = {g["name"] for g in plan["groups"]}
    assert {"blocks.0/self_attention", "blocks.0/cross_attention", "blocks.0/ffn"} <= names
    assert all(g["decision"] == "fp16" for g in plan["groups"] if g["name"].startswith("default:"))
    assert summary["passed"] and all(v["passed"] for v in summary["variants"])
    manifest = json.loads((paths.engines_dir("cpu") / "manifest.json").read_text())
    assert {"int8", "int8-qdq"} <= set(manifest["components"]["denoiser"]["variants"])
    videos = {
        p: Pipeline.from_dir(paths.engines_dir("cpu"), precision=p).generate("a red circle moving left", seed=0).frames for p in ("fp32", "int8")
    }
    fp32, int8 = (np.asarray(v, dtype=np.float64) for v in videos.values())
    assert fp32.shape == int8.shape and fp32.shape[-1] == 3
    psnr = 10 * np.log10(255.0**2 / max(np.mean((fp32 - int8) ** 2), 1e-12))
    assert psnr >= summary["limits"]["video_psnr_min_db"], psnr


def test_compare_wan_tiny_against_wan_pipeline(wan_int8: tuple[ArtifactPaths, dict[str, Any]], tmp_path: Path) -> None:
    """`t2vtrt compare`'s stage on wan-tiny with INT8: every graph (streaming decoder included) gated, and every
    precision's whole video vs diffusers' WanPipeline on the same latents, per frame."""
    from t2vtrt.build.compare import run_compare

    paths, _ = wan_int8
    eval_set = EvalSet(prompts=("a red circle moving left on a dark background",), seeds=(0,), denoiser_samples=2)
    run = run_compare(paths.engines_dir("cpu"), paths, eval_set=eval_set, reports_dir=tmp_path)
    assert run.passed, run.failures
    graphs = {c.subject: c for c in run.checks if c.kind == "graph" and c.status == PASSED}
    assert {"text_encoder fp32", "denoiser fp32", "denoiser int8", "denoiser int8-qdq", "vae_decoder fp32", "vae_decoder_next fp32"} <= set(graphs)
    assert "cache_out_0" in graphs["vae_decoder_next fp32"].metrics  # the causal caches are compared too
    oracle = {c.precision: c for c in run.checks if c.kind == "diffusers-video"}
    assert set(oracle) == {"onnx-fp32", "fp32", "int8", "int8-qdq"}
    assert all(c.status == PASSED for c in oracle.values())
    frames = oracle["fp32"].metrics["p0-s0"]["psnr"]
    assert len(frames) == 5 and min(frames) > 60.0  # wan-tiny's 5 frames; FP32 is WanPipeline's up to float rounding
    assert oracle["int8"].metrics["p0-s0"]["psnr_min"] >= 28.0
    assert run.diffusers_videos["p0-s0"].shape == (5, 32, 64, 3)
    assert "## Videos vs diffusers" in (tmp_path / "accuracy.md").read_text()
