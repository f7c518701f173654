"""The cpu target: graphs with external data travel with their weights and are hashed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx

from t2vtrt.build.artifacts import ArtifactPaths
from t2vtrt.build.engines.cpu import build_cpu_target, external_data_files
from t2vtrt.runtime.manifest import load_manifest
from t2vtrt.runtime.pipeline import Pipeline


def test_external_data_is_copied_and_hashed(tiny_paths: ArtifactPaths, tmp_path: Path) -> None:
    """A denoiser saved with external data (as > 2 GB models are) yields a runnable, hash-checked target."""
    paths = ArtifactPaths(tmp_path / "tiny")
    shutil.copytree(tiny_paths.onnx_dir, paths.onnx_dir)
    graph = paths.onnx("denoiser", "opt")
    model = onnx.load(str(graph))
    onnx.save(model, str(graph), save_as_external_data=True, all_tensors_to_one_file=True, location="denoiser.opt.onnx.data", size_threshold=1024)
    assert external_data_files(graph) == ["denoiser.opt.onnx.data"]
    manifest_path = build_cpu_target(paths)
    variant = json.loads(manifest_path.read_text())["components"]["denoiser"]["variants"]["fp32"]
    assert [e["file"] for e in variant["external_data"]] == ["denoiser.opt.onnx.data"]
    load_manifest(manifest_path.parent)  # hashes of graph and data verify
    video = Pipeline.from_dir(manifest_path.parent)("a boat", steps=1, frames=2, height=32, width=32)
    assert video.shape == (2, 32, 32, 3)
