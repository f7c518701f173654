"""The hash chain model -> graphs -> INT8 graphs -> engines: a skipped stage never ships a stale graph under a new hash."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from cli_run import assert_one_line_error, snapshot, t2vtrt

from t2vtrt.build.artifacts import ArtifactPaths
from t2vtrt.build.engines.cpu import build_cpu_target
from t2vtrt.build.graphfiles import load_graph, save_graph
from t2vtrt.build.provenance import graph_digest, int8_staleness, ledger_path, quantize_inputs, record_quantized
from t2vtrt.runtime.errors import T2VError
from t2vtrt.runtime.files import sha256_file


def _onnx_copy(tiny_paths: ArtifactPaths, root: Path) -> ArtifactPaths:
    """A private copy of the tiny model's onnx/ (export + surgery done)."""
    paths = ArtifactPaths(root / "tiny")
    shutil.copytree(tiny_paths.onnx_dir, paths.onnx_dir)
    return paths


def _fake_int8(paths: ArtifactPaths, calibrated_on: str) -> Path:
    """An 'INT8' denoiser (the FP32 graph stands in) and the precision plan calibrate would have left beside it."""
    graph = paths.onnx("denoiser", "int8-u8s8")
    shutil.copyfile(paths.onnx("denoiser", "opt"), graph)
    paths.calib_dir.mkdir(parents=True, exist_ok=True)
    (paths.calib_dir / "precision_plan.json").write_text(json.dumps({"source": {"file": "denoiser.opt.onnx", "sha256": calibrated_on}}))
    # quantize's verdict vouching for this very file (quantized with the gate off: no step schedule)
    (paths.calib_dir / "gate.json").write_text(json.dumps({"graphs": {graph.name: sha256_file(graph)}, "passed": True, "gated": False}))
    return graph


def _variants(manifest: Path) -> set[str]:
    """The denoiser precisions a built target ships."""
    return set(json.loads(manifest.read_text())["components"]["denoiser"]["variants"])


def test_int8_made_from_this_graph_ships_and_records_its_source(tiny_paths: ArtifactPaths, tmp_path: Path) -> None:
    """Control: an INT8 graph calibrated on the current FP32 denoiser ships, and the manifest says what from."""
    paths = _onnx_copy(tiny_paths, tmp_path)
    graph = _fake_int8(paths, sha256_file(paths.onnx("denoiser", "opt")))
    manifest = json.loads(build_cpu_target(paths).read_text())
    variant = manifest["components"]["denoiser"]["variants"]["int8"]
    assert variant["made_from"] == {"file": "onnx/denoiser.int8-u8s8.onnx", "sha256": sha256_file(graph)}
    chain = manifest["provenance"]
    assert chain["model_hash"] == manifest["model"]["hash"]
    assert chain["opt_graphs"]["denoiser"] == sha256_file(paths.onnx("denoiser", "opt"))


def test_int8_calibrated_on_another_graph_is_dropped(tiny_paths: ArtifactPaths, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The plan names another FP32 denoiser: the INT8 variant is not shipped, and one note says which stage to re-run."""
    paths = _onnx_copy(tiny_paths, tmp_path)
    _fake_int8(paths, "0" * 64)
    assert _variants(build_cpu_target(paths)) == {"fp32"}
    (note,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert "denoiser int8 dropped" in note and "re-run `t2vtrt calibrate` and `t2vtrt quantize`" in note


def test_ledger_wins_over_a_matching_plan(tiny_paths: ArtifactPaths, tmp_path: Path) -> None:
    """calibrate re-ran on the new graph but quantize failed its gate: the old INT8 graph's record still says 'old model'."""
    paths = _onnx_copy(tiny_paths, tmp_path)
    _fake_int8(paths, sha256_file(paths.onnx("denoiser", "opt")))
    info = json.loads(paths.export_info.read_text())
    record_quantized(paths, {"model_hash": info["model"]["hash"], "denoiser.opt.onnx": "1" * 64, "precision_plan.json": None})
    assert _variants(build_cpu_target(paths)) == {"fp32"}


def test_int8_of_a_graph_with_external_weights_ships(tiny_paths: ArtifactPaths, tmp_path: Path) -> None:
    """A denoiser past 2 GB keeps its weights in denoiser.opt.onnx.data: quantize's record matches the chain's digest of it."""
    paths = _onnx_copy(tiny_paths, tmp_path)
    opt = paths.onnx("denoiser", "opt")
    save_graph(load_graph(opt), opt, external=True)
    graph = _fake_int8(paths, sha256_file(opt))
    record_quantized(paths, quantize_inputs(paths))
    model_hash = json.loads(paths.export_info.read_text())["model"]["hash"]
    assert int8_staleness(paths, graph, model_hash, graph_digest(opt)) is None
    ledger_path(paths).unlink()  # no ledger: the plan's hash of the graph file decides
    assert int8_staleness(paths, graph, model_hash, graph_digest(opt)) is None
    assert graph_digest(opt) != sha256_file(opt)


def test_int8_without_any_record_is_dropped(tiny_paths: ArtifactPaths, tmp_path: Path) -> None:
    """No plan and no ledger: nothing proves what the graph was made from, so it does not ship."""
    paths = _onnx_copy(tiny_paths, tmp_path)
    shutil.copyfile(paths.onnx("denoiser", "opt"), paths.onnx("denoiser", "int8-u8s8"))
    assert _variants(build_cpu_target(paths)) == {"fp32"}


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        ("export", "re-run `t2vtrt export"),
        ("opt", "re-run `t2vtrt surgery"),
        ("surgery-record", "re-run `t2vtrt surgery"),
    ],
)
def test_broken_link_refuses_the_engines_stage(tiny_paths: ArtifactPaths, tmp_path: Path, damage: str, words: str) -> None:
    """A graph that is not what its stage recorded: engines refuses, naming the stage to re-run; no target is written."""
    paths = _onnx_copy(tiny_paths, tmp_path)
    if damage == "export":  # export re-ran partly (one graph replaced), surgery skipped
        paths.onnx("vae_decoder").write_bytes(paths.onnx("vae_decoder").read_bytes() + b"\0")
    elif damage == "opt":
        paths.onnx("denoiser", "opt").write_bytes(paths.onnx("text_encoder", "opt").read_bytes())
    else:  # surgery.json from an older t2v-trt (no hashes)
        report = json.loads(paths.surgery_report.read_text())
        del report["made_from"]
        paths.surgery_report.write_text(json.dumps(report))
    with pytest.raises(T2VError, match=words.replace("`", ".").replace("(", ".")):
        build_cpu_target(paths)
    assert not paths.engines_dir("cpu").exists()


def test_gpu_target_refuses_a_stale_int8_graph(tiny_paths: ArtifactPaths, tmp_path: Path) -> None:
    """GPU plans read onnx/ directly: a stale INT8 graph is refused in one line before planning, nothing written."""
    paths = _onnx_copy(tiny_paths, tmp_path)
    shutil.copyfile(paths.onnx("denoiser", "opt"), paths.onnx("denoiser", "int8"))
    before = snapshot(paths.root)
    result = t2vtrt("engines", "--model", "tiny", "--artifacts", str(tmp_path), "--gpu", "rtx3060", "--dry-run")
    assert_one_line_error(result, "onnx/denoiser.int8.onnx", "re-run `t2vtrt calibrate`", "delete onnx/denoiser.int8*.onnx")
    assert snapshot(paths.root) == before


def _perturb_unet(model_dir: Path) -> None:
    """Change the model's weights the way a fine-tune would (same files, other numbers)."""
    from safetensors.numpy import load_file, save_file

    weights = model_dir / "unet" / "diffusion_pytorch_model.safetensors"
    tensors = load_file(str(weights))
    name = next(k for k in sorted(tensors) if k.endswith("conv_in.weight"))
    tensors[name] = (tensors[name] * np.float32(1.5)).astype(tensors[name].dtype)
    save_file(tensors, str(weights), metadata={"format": "pt"})


@pytest.mark.slow  # three exports of the tiny model: about 45 s on 2 cores
def test_changed_model_without_calibrate_never_ships_the_old_int8(model_copy: Path, tmp_path: Path) -> None:
    """The issue's sequence: quantized once, weights changed, export + surgery + engines (calibrate skipped).

    All exit 0, but the manifest's int8 is gone (not the old model's graph under the new hash) and --precision int8 says so.
    """
    art = tmp_path / "art"
    paths = ArtifactPaths(art / model_copy.name)
    for stage in ("export", "surgery"):
        assert t2vtrt(stage, "--model", str(model_copy) if stage == "export" else model_copy.name, "--artifacts", str(art)).returncode == 0
    _fake_int8(paths, sha256_file(paths.onnx("denoiser", "opt")))  # what an earlier calibrate + quantize left
    first = t2vtrt("engines", "--model", model_copy.name, "--artifacts", str(art), "--gpu", "cpu")
    assert first.returncode == 0 and _variants(paths.engines_dir("cpu") / "manifest.json") == {"fp32", "int8"}
    old_hash = json.loads((paths.engines_dir("cpu") / "manifest.json").read_text())["model"]["hash"]

    _perturb_unet(model_copy)
    for stage in ("export", "surgery"):
        result = t2vtrt(stage, "--model", str(model_copy) if stage == "export" else model_copy.name, "--artifacts", str(art))
        assert result.returncode == 0, result.stderr
    result = t2vtrt("engines", "--model", model_copy.name, "--artifacts", str(art), "--gpu", "cpu")
    assert result.returncode == 0, result.stderr
    assert "denoiser int8 dropped" in result.stderr and "t2vtrt quantize" in result.stderr
    manifest = json.loads((paths.engines_dir("cpu") / "manifest.json").read_text())
    assert manifest["model"]["hash"] != old_hash and _variants(paths.engines_dir("cpu") / "manifest.json") == {"fp32"}
    run = t2vtrt(
        "generate",
        "a red ball",
        "--engines",
        str(paths.engines_dir("cpu")),
        "-o",
        str(tmp_path / "x.mp4"),
        "--precision",
        "int8",
        "--frames",
        "1",
        "--steps",
        "1",
    )
    assert_one_line_error(run, "precision 'int8' was not built")
