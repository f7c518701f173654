"""Build-side bad inputs: broken model folders, a file as --model, manifests pointing outside, a compare that compared nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cli_run import assert_one_line_error, snapshot, t2vtrt

from t2vtrt.build.artifacts import ArtifactPaths
from t2vtrt.runtime.errors import T2VError
from t2vtrt.runtime.manifest import load_manifest

PROMPT = "a red balloon rising over a lake"


@pytest.mark.parametrize("damage", ["truncated", "missing"])
def test_model_with_broken_weights(model_copy: Path, tmp_path: Path, damage: str) -> None:
    """A diffusers folder whose unet weights are cut short or gone: one line naming the folder; no artifacts, no empty onnx/."""
    weights = model_copy / "unet" / "diffusion_pytorch_model.safetensors"
    if damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:1000])
    else:
        weights.unlink()
    art = tmp_path / "art"
    result = t2vtrt("export", "--model", str(model_copy), "--artifacts", str(art))
    assert_one_line_error(result, str(model_copy), "missing or truncated", "copy the model directory again")
    assert not (art / model_copy.name).exists()


def test_export_on_a_full_disk(model_copy: Path, full_disk) -> None:  # type: ignore[no-untyped-def]
    """No room for the graphs: one line (no torch traceback); nothing of the model is left on the disk."""
    before = snapshot(full_disk.path)
    result = t2vtrt("export", "--model", str(model_copy), "--artifacts", str(full_disk.path / "art"), **full_disk.popen)
    assert_one_line_error(result, str(model_copy.name), "run it again")
    assert snapshot(full_disk.path) == before
    assert not (full_disk.path / "art" / model_copy.name).exists()


def test_a_file_as_model(tmp_path: Path) -> None:
    """--model pointing at a file says it is a file (not 'does not exist') and lists every embedded name."""
    file = tmp_path / "model.safetensors"
    file.write_bytes(b"x")
    result = t2vtrt("export", "--model", str(file), "--artifacts", str(tmp_path / "art"))
    assert_one_line_error(result, "is a file, not a directory", "bench, shapes, tiny")
    assert not (tmp_path / "art").exists()


def test_missing_model_dir_hint_names_every_embedded_model(tmp_path: Path) -> None:
    """The hint lists shapes (the default) too."""
    result = t2vtrt("export", "--model", str(tmp_path / "nope"), "--artifacts", str(tmp_path / "art"))
    assert_one_line_error(result, "does not exist", "bench, shapes, tiny")


def test_summary_of_an_unknown_model(tmp_path: Path) -> None:
    """summary --model nosuch is an error, not an empty table with exit 0."""
    assert_one_line_error(t2vtrt("summary", "--model", "nosuch", "--artifacts", str(tmp_path)), "nosuch", "t2vtrt export")


@pytest.mark.parametrize("where", ["absolute", "parent"])
def test_manifest_pointing_outside_its_folder(engines_copy: Path, tmp_path: Path, where: str) -> None:
    """A variant file outside the target folder is refused even with a matching hash (and without hash checks)."""
    outside = tmp_path / "elsewhere.onnx"
    shutil.copyfile(engines_copy / "vae_decoder.fp32.onnx", outside)
    manifest = json.loads((engines_copy / "manifest.json").read_text())
    manifest["components"]["vae_decoder"]["variants"]["fp32"]["file"] = str(outside) if where == "absolute" else "../elsewhere.onnx"
    (engines_copy / "manifest.json").write_text(json.dumps(manifest))
    for verify in (True, False):
        with pytest.raises(T2VError, match="outside its folder"):
            load_manifest(engines_copy, verify_hashes=verify)
    result = t2vtrt("generate", PROMPT, "--engines", str(engines_copy), "-o", str(tmp_path / "x.mp4"))
    assert_one_line_error(result, "outside its folder")


def _as_tensorrt_target(engines: Path) -> None:
    """Relabel a cpu target's manifest as a TensorRT one (what a GPU machine's build would ship)."""
    path = engines / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["target"] = {"name": "rtx3060", "backend": "tensorrt", "gpu": None, "tensorrt_version": "10.13.0"}
    for component in manifest["components"].values():
        for variant in component["variants"].values():
            variant["backend"] = "tensorrt"
    path.write_text(json.dumps(manifest))


def test_compare_that_compared_nothing_fails(tiny_paths: ArtifactPaths, tiny_engines: Path, tmp_path: Path) -> None:
    """A TensorRT target on a machine without TensorRT: every check skipped, so the verdict is 'nothing compared', exit 1."""
    pytest.importorskip("polygraphy")
    import importlib.util

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here: the target would really be compared")
    from t2vtrt.build.compare import run_compare
    from t2vtrt.build.compare.capture import EvalSet

    paths = ArtifactPaths(tmp_path / "tiny")  # a model folder of our own: compare writes its reports there
    paths.root.mkdir()
    (paths.root / "onnx").symlink_to(tiny_paths.onnx_dir)
    engines = paths.engines_dir("rtx3060")
    shutil.copytree(tiny_engines, engines)
    _as_tensorrt_target(engines)
    small = EvalSet(prompts=(PROMPT,), seeds=(0,), steps=2, denoiser_samples=2)
    run = run_compare(engines, paths, eval_set=small, reports_dir=tmp_path / "reports")
    assert not run.compared and not run.passed and run.status == "nothing compared"
    assert run.failures[-1].startswith("nothing compared: every variant of target rtx3060 was skipped")
    report = json.loads((tmp_path / "reports" / "accuracy.json").read_text())
    assert report["passed"] is False and report["status"] == "nothing compared"

    eval_file = tmp_path / "eval.toml"
    eval_file.write_text(f'prompts = ["{PROMPT}"]\nseeds = [0]\nsteps = 2\ndenoiser_samples = 2\n')
    result = t2vtrt("compare", "--engines", str(engines), "--eval", str(eval_file))
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert "FAILED nothing compared" in result.stderr and "accuracy: FAILED" in result.stderr
