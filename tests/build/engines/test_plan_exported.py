"""The build plan on the tiny model's real exported graphs: weights as the graphs hold them, and a GPU it must not fit."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import synthetic_artifacts as synthetic
from onnx import numpy_helper

from t2vtrt.build.artifacts import COMPONENTS, ArtifactPaths
from t2vtrt.build.engines.plan import make_plan
from t2vtrt.build.gpus.profiles import load_profile

GIB = 1 << 30


@pytest.fixture(scope="module")
def exported(tiny_paths: ArtifactPaths, tmp_path_factory: pytest.TempPathFactory) -> ArtifactPaths:
    """A private copy of the tiny model's export + surgery (no fp16/int8 graphs beside them)."""
    paths = ArtifactPaths(tmp_path_factory.mktemp("plan") / "tiny")
    paths.onnx_dir.mkdir(parents=True)
    for name in ("export.json", "tokenizer.json", *(f"{c}.opt.onnx" for c in COMPONENTS)):
        shutil.copyfile(tiny_paths.onnx_dir / name, paths.onnx_dir / name)
    return paths


def _tensor_bytes(graph: Path) -> tuple[int, int]:
    """(float32 bytes, other bytes) of every initializer and Constant in a graph, counted here independently of plan.py."""
    model = onnx.load(str(graph))
    tensors = [numpy_helper.to_array(t) for t in model.graph.initializer]
    tensors += [numpy_helper.to_array(a.t) for n in model.graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"]
    floats = sum(t.nbytes for t in tensors if t.dtype == np.float32)
    return floats, sum(t.nbytes for t in tensors) - floats


def test_weights_are_what_the_exported_graphs_hold(exported: ArtifactPaths) -> None:
    """Per component, the plan's fp32 weight bytes equal the graph's tensors; fp16 halves the float ones only."""
    plan = make_plan(exported, load_profile("rtx3060"))
    for component in COMPONENTS:
        weights = plan.components[component].stats.weights
        floats, others = _tensor_bytes(exported.onnx(component, "opt"))
        assert floats > 0
        assert weights["fp32"] == weights["engine"] == floats + others, component
        assert weights["fp16"] == floats // 2 + others, component


def test_activations_grow_with_the_max_shape(exported: ArtifactPaths, tmp_path: Path) -> None:
    """A profile allowing 4x the pixels plans more activation memory for the denoiser than a smaller one."""
    small = synthetic.write_profile(tmp_path, "small", 12)
    big = tmp_path / "big.toml"
    narrowed = small.read_text().replace("height = [32, 64, 128]", "height = [32, 64, 64]")
    big.write_text(narrowed.replace("width = [32, 64, 128]", "width = [32, 64, 64]"))
    low = make_plan(exported, load_profile(str(big))).components["denoiser"].stats.activation_bytes
    high = make_plan(exported, load_profile(str(small))).components["denoiser"].stats.activation_bytes
    assert 0 < low < high


def test_a_gpu_too_small_is_refused(exported: ArtifactPaths, tmp_path: Path) -> None:
    """Less VRAM than the denoiser's weights alone: no mode fits (refused, alternatives named); the plan's own need fits."""
    probe = make_plan(exported, load_profile(str(synthetic.write_profile(tmp_path, "probe", 12, reserve_gb=0.0))))
    denoiser_weights = probe.components["denoiser"].stats.weights["engine"]
    tiny_gpu = load_profile(str(synthetic.write_profile(tmp_path, "tiny-gpu", round(0.5 * denoiser_weights / GIB, 6), reserve_gb=0.0)))
    refused = make_plan(exported, tiny_gpu)
    assert not refused.fits and refused.vram.alternatives
    assert refused.vram.required > refused.vram.total
    enough = load_profile(str(synthetic.write_profile(tmp_path, "enough", round(1.05 * probe.vram.required / GIB, 6), reserve_gb=0.0)))
    assert make_plan(exported, enough).fits
