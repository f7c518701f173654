"""Every registered family's tiny model through every stage after export: calibrate, quantize (gated), the cpu
target with INT8, generate, and compare (graphs, videos, and the family's own diffusers pipeline)."""

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
from t2vtrt.build.families import FAMILIES

# Per family, the session fixture (tests/conftest.py) holding its embedded tiny model exported and patched.
EXPORTED = {"unet3d": "tiny_paths", "wan": "wan_paths"}
# A small calibration budget: these tests check that the stages run and gate, not the best plan.
SMALL = {"prompts": 4, "samples": 16, "eval_prompts": 2, "eval_samples": 4, "sweep_samples": 2, "video_prompts": 1, "video_seeds": (0,)}


def test_every_registered_family_is_covered() -> None:
    """A new family must bring an embedded tiny model and join this file's end-to-end run."""
    assert set(EXPORTED) == set(FAMILIES)


@pytest.fixture(scope="module", params=sorted(EXPORTED))
def built(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, ArtifactPaths, dict[str, Any]]:
    """(family, a private copy of its tiny model calibrated, quantized and built for the cpu target with INT8, quantize's summary)."""
    from t2vtrt.build.engines.cpu import build_cpu_target
    from t2vtrt.calibration.settings import load_budget
    from t2vtrt.calibration.stage import run_calibrate, run_quantize

    exported: ArtifactPaths = request.getfixturevalue(EXPORTED[request.param])
    paths = ArtifactPaths(tmp_path_factory.mktemp(request.param) / exported.root.name)
    shutil.copytree(exported.root, paths.root, ignore=shutil.ignore_patterns("engines", "calib"))  # the session's copy stays FP32
    budget = load_budget(exported.root.name).with_overrides(**SMALL)
    run_calibrate(paths, budget=budget)
    summary = run_quantize(paths, budget=budget)
    build_cpu_target(paths)
    return request.param, paths, summary


def test_int8_end_to_end(built: tuple[str, ArtifactPaths, dict[str, Any]]) -> None:
    """The denoiser calibrates in the family's block x kind groups, passes the quantize gate, ships as int8 and generates."""
    from t2vtrt.build.families import get_family
    from t2vtrt.calibration.groups import block_and_kind
    from t2vtrt.runtime.pipeline import Pipeline

    family, paths, summary = built
    plan = json.loads((paths.calib_dir / "precision_plan.json").read_text())
    swept = [g for g in plan["groups"] if not g["name"].startswith("default:")]
    # In graph order a group of nodes outside the blocks (e.g. readers of the time embedding) may come early.
    assert len([g for g in swept if block_and_kind(g["nodes"][0], get_family(family))[0] != "other"]) >= 3
    assert all(g["decision"] == "fp16" for g in plan["groups"] if g["name"].startswith("default:"))
    assert summary["passed"] and all(v["passed"] for v in summary["variants"])
    manifest = json.loads((paths.engines_dir("cpu") / "manifest.json").read_text())
    assert {"int8", "int8-qdq"} <= set(manifest["components"]["denoiser"]["variants"])
    videos = [Pipeline.from_dir(paths.engines_dir("cpu"), precision=p).generate("a red circle moving left", seed=0).frames for p in ("fp32", "int8")]
    fp32, int8 = (np.asarray(v, dtype=np.float64) for v in videos)
    assert fp32.shape == int8.shape and fp32.shape[-1] == 3
    psnr = 10 * np.log10(255.0**2 / max(np.mean((fp32 - int8) ** 2), 1e-12))
    assert psnr >= summary["limits"]["video_psnr_min_db"], psnr


def test_compare_against_the_family_pipeline(built: tuple[str, ArtifactPaths, dict[str, Any]], tmp_path: Path) -> None:
    """`t2vtrt compare`'s stage with INT8: every graph gated (a streaming decoder's caches too), and every precision's
    whole video vs the family's diffusers pipeline on the same latents, per frame."""
    from t2vtrt.build.compare import run_compare
    from t2vtrt.runtime.manifest import load_manifest

    family, paths, _ = built
    eval_set = EvalSet(prompts=("a red circle moving left on a dark background",), seeds=(0,), denoiser_samples=2)
    run = run_compare(paths.engines_dir("cpu"), paths, eval_set=eval_set, reports_dir=tmp_path)
    assert run.passed, run.failures
    manifest = load_manifest(paths.engines_dir("cpu"))
    graphs = {c.subject: c for c in run.checks if c.kind == "graph" and c.status == PASSED}
    assert {f"{c} fp32" for c in manifest.data["components"]} | {"denoiser int8", "denoiser int8-qdq"} <= set(graphs)
    if manifest.data["latent"]["vae_decode"] == "streaming":
        nxt = manifest.data["latent"]["stream"]["next"]
        assert any(name.startswith("cache_out_") for name in graphs[f"{nxt} fp32"].metrics)  # the causal caches are compared too
    oracle = {c.precision: c for c in run.checks if c.kind == "diffusers-video"}
    assert set(oracle) == {"onnx-fp32", "fp32", "int8", "int8-qdq"}
    assert all(c.status == PASSED for c in oracle.values())
    assert min(oracle["fp32"].metrics["p0-s0"]["psnr"]) > 60.0  # FP32 is the diffusers pipeline up to float rounding
    assert oracle["int8"].metrics["p0-s0"]["psnr_min"] >= 28.0
    assert "## Videos vs diffusers" in (tmp_path / "accuracy.md").read_text()
