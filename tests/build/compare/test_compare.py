"""`t2vtrt compare` on the tiny model's cpu target: passes as built, fails on broken variants, naming them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner

from t2vtrt.build.artifacts import ArtifactPaths
from t2vtrt.build.compare import load_golden, load_tolerances, run_compare
from t2vtrt.build.compare.capture import EvalSet, load_inputs
from t2vtrt.build.compare.gates import FAILED, PASSED, SKIPPED
from t2vtrt.build.compare.run import CompareRun
from t2vtrt.build.compare.stage import compare_component, step_count
from t2vtrt.runtime.errors import T2VError
from t2vtrt.runtime.manifest import load_manifest


@pytest.fixture(scope="module")
def golden_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the first compare stores its golden set."""
    return tmp_path_factory.mktemp("golden") / "tiny"


@pytest.fixture(scope="module")
def first_run(
    tiny_paths: ArtifactPaths, tiny_engines: Path, small_eval: EvalSet, golden_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> CompareRun:
    """One compare of the target as built, recording the golden set."""
    reports = tmp_path_factory.mktemp("reports")
    return run_compare(tiny_engines, tiny_paths, eval_set=small_eval, golden_dir=golden_dir, save_golden_set=True, reports_dir=reports)


def test_compare_passes_on_the_tiny_cpu_target(first_run: CompareRun) -> None:
    assert first_run.passed, first_run.failures
    graphs = {c.subject: c for c in first_run.checks if c.kind == "graph"}
    for component in ("text_encoder", "denoiser", "vae_decoder"):
        check = graphs[f"{component} fp32"]
        assert check.status == PASSED
        (metrics,) = check.metrics.values()
        assert metrics["rel_l2"] < 1e-5 and metrics["cosine"] > 0.999999 and metrics["nonfinite"] == 0
    video = next(c for c in first_run.checks if c.kind == "video" and c.precision == "fp32")
    assert video.status == PASSED and len(video.metrics["p0-s0"]["psnr"]) == 8  # one PSNR per frame
    # The end-to-end oracle: the unet3d family's diffusers loop on the same latents, per frame.
    oracle = {c.precision: c for c in first_run.checks if c.kind == "diffusers-video"}
    assert set(oracle) == {"onnx-fp32", "fp32"} and all(c.status == PASSED for c in oracle.values())
    assert len(oracle["fp32"].metrics["p0-s0"]["psnr"]) == 8 and oracle["fp32"].metrics["p0-s0"]["psnr_min"] > 60.0


def test_variants_the_target_lacks_are_skipped_never_passed(first_run: CompareRun) -> None:
    by_subject = {c.subject: c for c in first_run.checks}
    assert by_subject["denoiser int8"].status == SKIPPED
    assert "not built for target cpu" in by_subject["denoiser int8"].reason
    assert by_subject["video fp16"].status == SKIPPED
    assert "denoiser int8: not built for target cpu" in first_run.report["skipped"]


def test_reports_are_written(first_run: CompareRun) -> None:
    reports = first_run.reports_dir
    data = json.loads((reports / "accuracy.json").read_text())
    assert data["passed"] is True and data["target"]["name"] == "cpu"
    assert len(data["model"]["hash"]) == 64 and len(data["manifest_sha256"]) == 64
    assert data["tools"]["polygraphy"] and data["tools"]["onnxruntime"]
    markdown = (reports / "accuracy.md").read_text()
    assert "| denoiser | fp32 | noise_pred | pass |" in markdown and "Skipped" in markdown
    assert "| fp32 | p0-s0 | pass |" in markdown.split("## Videos vs diffusers")[1]
    for png in ("frames-fp32.png", "psnr.png"):
        assert (reports / png).read_bytes()[:4] == b"\x89PNG"
    # The inputs are polygraphy input JSON: what `polygraphy run --load-inputs` reads.
    feeds = load_inputs(reports / "inputs" / "denoiser.json")
    assert len(feeds) == 2 and set(feeds[0]) == {"sample", "timestep", "encoder_hidden_states"}


def test_golden_save_load_round_trip(first_run: CompareRun, golden_dir: Path, tiny_engines: Path) -> None:
    model_hash = load_manifest(tiny_engines).data["model"]["hash"]
    golden = load_golden(golden_dir, model_hash)
    assert golden.model_hash == model_hash
    saved = load_inputs(first_run.reports_dir / "inputs" / "vae_decoder.json")
    loaded = golden.inputs("vae_decoder")
    assert len(saved) == len(loaded) and all(np.array_equal(a["latent"], b["latent"]) for a, b in zip(saved, loaded))
    (output,) = golden.outputs("vae_decoder")
    assert output["image"].dtype == np.float32
    assert np.array_equal(golden.videos()["p0-s0"], first_run.reference_videos["p0-s0"])


def test_compare_against_the_golden_set(
    first_run: CompareRun, golden_dir: Path, tiny_paths: ArtifactPaths, tiny_engines: Path, small_eval: EvalSet, tmp_path: Path
) -> None:
    steps: list[str] = []
    run = run_compare(tiny_engines, tiny_paths, eval_set=small_eval, golden_dir=golden_dir, reports_dir=tmp_path, on_step=steps.append)
    assert run.passed, run.failures
    assert len(steps) == step_count(tiny_engines)  # the CLI's bar is sized by step_count
    golden = [c for c in run.checks if c.kind.startswith("golden")]
    assert {c.subject for c in golden} == {"golden denoiser", "golden text_encoder", "golden vae_decoder", "golden video"}
    assert all(c.status == PASSED for c in golden)
    assert run.report["golden"]["status"] == "compared"


def test_golden_set_of_another_model_is_refused(
    golden_dir: Path, first_run: CompareRun, tiny_paths: ArtifactPaths, tiny_engines: Path, tmp_path: Path
) -> None:
    other = tmp_path / "golden"
    shutil.copytree(golden_dir, other)
    meta = json.loads((other / "golden.json").read_text())
    meta["model"]["hash"] = "0" * 64
    (other / "golden.json").write_text(json.dumps(meta))
    with pytest.raises(T2VError) as error:
        run_compare(tiny_engines, tiny_paths, golden_dir=other, reports_dir=tmp_path / "reports")
    message = str(error.value)
    assert "\n" not in message and "000000000000" in message and "--save-golden" in message


def test_corrupted_weights_fail_naming_the_component(
    tiny_paths: ArtifactPaths, tiny_engines: Path, graph_tools: SimpleNamespace, tmp_path: Path
) -> None:
    root = tmp_path / "artifacts" / "tiny"  # an artifacts layout: the shared reference graphs, a private target
    root.mkdir(parents=True)
    (root / "onnx").symlink_to(tiny_paths.onnx_dir)
    engines = root / "engines" / "cpu"
    shutil.copytree(tiny_engines, engines)
    graph = engines / "denoiser.fp32.onnx"
    graph_tools.perturb_weights(graph, graph)
    graph_tools.register_variant(engines, "denoiser", "fp32", graph)  # hashes match again: only accuracy can tell
    (tmp_path / "eval.toml").write_text('prompts = ["a red balloon rising over a lake"]\nseeds = [0]\nsteps = 2\n')
    from t2vtrt.cli import cli

    args = [
        "--quiet",
        "compare",
        "--model",
        "tiny",
        "--artifacts",
        str(tmp_path / "artifacts"),
        "--gpu",
        "cpu",
        "--eval",
        str(tmp_path / "eval.toml"),
    ]
    missing = CliRunner().invoke(cli, [*args, "--golden", str(tmp_path / "nothing-here")])
    assert isinstance(missing.exception, T2VError)  # an explicit --golden that does not exist is an error, not a skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output
    failed = [line for line in result.output.splitlines() if line.startswith("FAILED ")]
    assert any(line.startswith("FAILED denoiser fp32: rel_l2") for line in failed), result.output
    assert not any("text_encoder" in line or "vae_decoder" in line for line in failed)
    report = json.loads((root / "reports" / "accuracy.json").read_text())
    assert report["passed"] is False and any(f.startswith("denoiser fp32: cosine") for f in report["failures"])


def _graph_checks(engines: Path, paths: ArtifactPaths, component: str, feeds: list) -> dict:
    """Graph-level compare of one component (no videos): subject -> check."""
    checks, _ = compare_component(load_manifest(engines), paths, component, feeds, load_tolerances(), None)
    return {c.subject: c for c in checks}


def test_qdq_graph_with_wrong_scales_fails(
    engines_copy: Path, tiny_paths: ArtifactPaths, graph_tools: SimpleNamespace, first_run: CompareRun
) -> None:
    qdq = engines_copy / "denoiser.int8-qdq.onnx"
    graph_tools.wrap_output(engines_copy / "denoiser.fp32.onnx", qdq, graph_tools.qdq_nodes(scale=100.0))
    graph_tools.register_variant(engines_copy, "denoiser", "int8-qdq", qdq)
    feeds = load_inputs(first_run.reports_dir / "inputs" / "denoiser.json")
    checks = _graph_checks(engines_copy, tiny_paths, "denoiser", feeds)
    assert checks["denoiser fp32"].status == PASSED
    bad = checks["denoiser int8-qdq"]
    assert bad.status == FAILED
    assert any(line.startswith("denoiser int8-qdq: cosine") for line in bad.failures), bad.failures


def test_nan_in_an_output_fails_with_a_clear_message(
    engines_copy: Path, tiny_paths: ArtifactPaths, graph_tools: SimpleNamespace, first_run: CompareRun
) -> None:
    graph = engines_copy / "vae_decoder.fp32.onnx"
    graph_tools.wrap_output(graph, graph, graph_tools.nan_nodes)
    graph_tools.register_variant(engines_copy, "vae_decoder", "fp32", graph)
    feeds = load_inputs(first_run.reports_dir / "inputs" / "vae_decoder.json")
    check = _graph_checks(engines_copy, tiny_paths, "vae_decoder", feeds)["vae_decoder fp32"]
    assert check.status == FAILED
    assert check.failures[0].startswith("vae_decoder fp32: output 'image' has ") and "NaN/Inf values" in check.failures[0]
    assert check.metrics["image"]["nonfinite"] > 0
