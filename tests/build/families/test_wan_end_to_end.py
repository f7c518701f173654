"""wan-tiny through every stage after export: calibrate, quantize (gated), the cpu target with INT8, generate."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from t2vtrt.build.artifacts import ArtifactPaths


def test_wan_tiny_int8_end_to_end(wan_paths: ArtifactPaths, tmp_path: Path) -> None:
    """The DiT calibrates in block x kind groups, passes the quantize gate, ships as int8 and generates a video."""
    from t2vtrt.build.engines.cpu import build_cpu_target
    from t2vtrt.calibration.stage import run_calibrate, run_quantize
    from t2vtrt.runtime.pipeline import Pipeline

    paths = ArtifactPaths(tmp_path / "wan-tiny")
    shutil.copytree(wan_paths.root, paths.root, ignore=shutil.ignore_patterns("engines", "calib"))  # the session's copy stays FP32
    run_calibrate(paths)
    plan = json.loads((paths.calib_dir / "precision_plan.json").read_text())
    names = {g["name"] for g in plan["groups"]}
    assert {"blocks.0/self_attention", "blocks.0/cross_attention", "blocks.0/ffn"} <= names
    assert all(g["decision"] == "fp16" for g in plan["groups"] if g["name"].startswith("default:"))
    summary = run_quantize(paths)
    assert summary["passed"] and all(v["passed"] for v in summary["variants"])
    manifest = json.loads(build_cpu_target(paths).read_text())
    assert {"int8", "int8-qdq"} <= set(manifest["components"]["denoiser"]["variants"])
    videos = {
        p: Pipeline.from_dir(paths.engines_dir("cpu"), precision=p).generate("a red circle moving left", seed=0).frames for p in ("fp32", "int8")
    }
    fp32, int8 = (np.asarray(v, dtype=np.float64) for v in videos.values())
    assert fp32.shape == int8.shape and fp32.shape[-1] == 3
    psnr = 10 * np.log10(255.0**2 / max(np.mean((fp32 - int8) ** 2), 1e-12))
    assert psnr >= summary["limits"]["video_psnr_min_db"], psnr
