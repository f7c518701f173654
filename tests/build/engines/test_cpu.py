"""The cpu target: graphs with external data travel with their weights and are hashed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx

from t2vtrt.build.artifacts import ArtifactPaths
from t2vtrt.build.engines.cpu import build_cpu_target
from t2vtrt.build.graphfiles import external_data_files
from t2vtrt.build.provenance import graph_digest
from t2vtrt.runtime.manifest import load_manifest
from t2vtrt.runtime.pipeline import Pipeline


def test_external_data_is_copied_and_hashed(tiny_paths: ArtifactPaths, tmp_path: Path) -> None:
    """A graph saved with external data (as > 2 GB models are) yields a runnable, hash-checked target."""
    paths = ArtifactPaths(tmp_path / "tiny")
    shutil.copytree(tiny_paths.onnx_dir, paths.onnx_dir)
    # The text encoder: no cpu-target pass rewrites it (CLIP's attention is masked), so it ships as exported.
    graph = paths.onnx("text_encoder", "opt")
    model = onnx.load(str(graph))
    onnx.save(model, str(graph), save_as_external_data=True, all_tensors_to_one_file=True, location="text_encoder.opt.onnx.data", size_threshold=1024)
    assert external_data_files(graph) == [graph.with_name("text_encoder.opt.onnx.data")]
    report = json.loads(paths.surgery_report.read_text())  # as surgery records a graph it saved with external data
    report["graphs"]["text_encoder"] = graph_digest(graph)
    paths.surgery_report.write_text(json.dumps(report))
    manifest_path = build_cpu_target(paths)
    variant = json.loads(manifest_path.read_text())["components"]["text_encoder"]["variants"]["fp32"]
    assert [e["file"] for e in variant["external_data"]] == ["text_encoder.opt.onnx.data"] and "target_passes" not in variant
    load_manifest(manifest_path.parent)  # hashes of graph and data verify
    video = Pipeline.from_dir(manifest_path.parent)("a boat", steps=1, frames=2, height=32, width=32)
    assert video.shape == (2, 32, 32, 3)


def test_cpu_denoiser_runs_fused_attention_with_the_same_output(tiny_paths: ArtifactPaths, tiny_engines: Path) -> None:
    """The cpu target's denoiser has its attention fused for ONNX Runtime, says so, and computes what the shared graph does."""
    import numpy as np
    import onnxruntime as ort

    variant = json.loads((tiny_engines / "manifest.json").read_text())["components"]["denoiser"]["variants"]["fp32"]
    shipped = onnx.load(str(tiny_engines / variant["file"]))
    fused = sum(n.op_type == "MultiHeadAttention" for n in shipped.graph.node)
    shared = tiny_paths.onnx("denoiser", "opt")  # what TensorRT reads: no com.microsoft ops in it
    shared_ops = [n.op_type for n in onnx.load(str(shared)).graph.node]
    norms = shared_ops.count("InstanceNormalization")  # GroupNorm's core, multithreaded in the cpu file
    assert fused > 0 and norms > 0
    assert variant["target_passes"] == {"fuse_attention_ort": fused, "instance_norm_to_layer_norm": norms}
    assert not any(n.op_type in ("Softmax", "InstanceNormalization") for n in shipped.graph.node)
    assert not any(n.domain == "com.microsoft" for n in onnx.load(str(shared)).graph.node)
    sessions = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (tiny_engines / variant["file"], shared)]
    rng = np.random.default_rng(0)
    feeds = {}
    for i in sessions[1].get_inputs():
        shape = [2 if not isinstance(d, int) else d for d in i.shape]
        if i.name == "sample":
            shape = [2, shape[1], 3, 8, 8]
        feeds[i.name] = (rng.standard_normal(shape) * (100 if i.name == "timestep" else 1)).astype(np.float32)
    got, want = (s.run(None, feeds)[0] for s in sessions)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * float(np.abs(want).max()))


def test_a_rewritten_graph_past_the_size_limit_keeps_its_weights_beside_it(tiny_paths: ArtifactPaths, tmp_path: Path, monkeypatch) -> None:
    """A fused graph too big for one protobuf is written with external data, which the manifest lists and hashes."""
    from t2vtrt.build import graphfiles

    monkeypatch.setattr(graphfiles, "EXTERNAL_DATA_BYTES", 0)  # every rewritten graph counts as > 2 GB
    paths = ArtifactPaths(tmp_path / "tiny")
    shutil.copytree(tiny_paths.onnx_dir, paths.onnx_dir)
    manifest_path = build_cpu_target(paths)
    variant = json.loads(manifest_path.read_text())["components"]["denoiser"]["variants"]["fp32"]
    assert variant["target_passes"]["fuse_attention_ort"] > 0
    assert [e["file"] for e in variant["external_data"]] == ["denoiser.fp32.onnx.data"]
    assert not list(manifest_path.parent.glob(".*"))  # no temp folders left behind
    video = Pipeline.from_dir(manifest_path.parent)("a boat", steps=1, frames=2, height=32, width=32)
    assert video.shape == (2, 32, 32, 3)
