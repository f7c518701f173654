"""Helpers to corrupt a target's graphs and keep its manifest's hashes honest, and a small eval set."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from t2vtrt.build.compare.capture import EvalSet
from t2vtrt.runtime.files import sha256_file

# One prompt, one seed, two steps: the whole compare machinery at a fraction of the default cost.
SMALL_EVAL = EvalSet(prompts=("a red balloon rising over a lake",), seeds=(0,), steps=2, denoiser_samples=2)


@pytest.fixture(scope="session")
def small_eval() -> EvalSet:
    """The cheap eval set."""
    return SMALL_EVAL


def register_variant(target: Path, component: str, precision: str, graph: Path) -> Path:
    """Copy `graph` into the target as <component>.<precision>.onnx and (re)write its manifest entry and hash."""
    file = f"{component}.{precision}.onnx"
    if graph != target / file:
        shutil.copyfile(graph, target / file)
    manifest_path = target / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["components"][component]["variants"][precision] = {
        "file": file,
        "sha256": sha256_file(target / file),
        "bytes": (target / file).stat().st_size,
        "precision": precision,
        "backend": "onnxruntime",
    }
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return target / file


def perturb_weights(src: Path, dst: Path, scale: float = 0.05, seed: int = 0) -> str:
    """Add noise to the largest float initializer (a "bad build"); return its name."""
    model = onnx.load(str(src))
    biggest = max((t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT), key=lambda t: np.prod(t.dims))
    weights = numpy_helper.to_array(biggest)
    noisy = weights + scale * weights.std() * np.random.default_rng(seed).standard_normal(weights.shape).astype(np.float32)
    biggest.CopyFrom(numpy_helper.from_array(noisy.astype(np.float32), biggest.name))
    onnx.save(model, str(dst))
    return biggest.name


def wrap_output(src: Path, dst: Path, make_nodes: Callable[[str, str], tuple[list, list]]) -> None:
    """Rename the graph's first output to <name>_raw and add `make_nodes(raw, name)` (nodes, initializers) after it."""
    model = onnx.load(str(src))
    name = model.graph.output[0].name
    raw = f"{name}_raw"
    for node in model.graph.node:
        node.output[:] = [raw if o == name else o for o in node.output]
        node.input[:] = [raw if i == name else i for i in node.input]
    nodes, initializers = make_nodes(raw, name)
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(initializers)
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))


def qdq_nodes(scale: float) -> Callable[[str, str], tuple[list, list]]:
    """A per-tensor int8 Q/DQ pair on the output, with the given (wrong) scale."""

    def make(raw: str, out: str) -> tuple[list, list]:
        inits = [numpy_helper.from_array(np.array(scale, np.float32), "bad_scale"), numpy_helper.from_array(np.array(0, np.int8), "bad_zero_point")]
        nodes = [
            helper.make_node("QuantizeLinear", [raw, "bad_scale", "bad_zero_point"], ["q_out"]),
            helper.make_node("DequantizeLinear", ["q_out", "bad_scale", "bad_zero_point"], [out]),
        ]
        return nodes, inits

    return make


def nan_nodes(raw: str, out: str) -> tuple[list, list]:
    """Multiply the output by NaN."""
    return [helper.make_node("Mul", [raw, "nan_const"], [out])], [numpy_helper.from_array(np.array(np.nan, np.float32), "nan_const")]


@pytest.fixture(scope="session")
def graph_tools() -> SimpleNamespace:
    """The helpers above, as a fixture (importlib import mode: test modules cannot import a conftest)."""
    return SimpleNamespace(
        register_variant=register_variant, perturb_weights=perturb_weights, wrap_output=wrap_output, qdq_nodes=qdq_nodes, nan_nodes=nan_nodes
    )
