"""The dynamo exporter's path in build/export.py: traced shapes, dynamic shapes and names like TorchScript's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from t2vtrt.build.export import export_component, export_shapes, scoped_node_name
from t2vtrt.build.families.spec import ComponentSpec, TensorSpec


def _spec() -> ComponentSpec:
    """x (batch, 3, size) plus a varargs cache at twice the size: the streaming VAE's shape of problem."""
    return ComponentSpec(
        name="toy",
        inputs=(TensorSpec("x", "float32", ("batch", 3, "size")), TensorSpec("cache_in_0", "float32", ("batch", 3, "size_x2"))),
        outputs=(TensorSpec("y", "float32", ("batch", 3, "size")), TensorSpec("cache_out_0", "float32", ("batch", 3, "size_x2"))),
        axes={"batch": (1, 1, 4), "size": (2, 3, 8), "size_x2": (4, 6, 16)},
    )


class _Inner(torch.nn.Module):
    """A named submodule, so the node names carry a module path."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.transpose(1, 2)).transpose(1, 2)


class _Toy(torch.nn.Module):
    """forward(x, *caches) like the streaming decoder graph."""

    def __init__(self) -> None:
        super().__init__()
        self.block = _Inner()

    def forward(self, x: torch.Tensor, *caches: torch.Tensor) -> tuple[torch.Tensor, ...]:
        up = torch.repeat_interleave(x, 2, dim=2)
        return self.block(x), caches[0] * 0.5 + up


def test_dynamo_traces_no_dynamic_axis_at_one() -> None:
    """An axis whose opt is 1 is traced at 2 (torch.export would make it a constant); torchscript keeps opt."""
    spec = _spec()
    assert export_shapes(spec, "dynamo")["x"] == (2, 3, 3)
    assert export_shapes(spec, "torchscript")["x"] == spec.input_shapes("opt")["x"]


def test_dynamo_export_is_dynamic_and_named(tmp_path: Path) -> None:
    """A *args forward exports with every spec axis dynamic, I/O dims and nodes named, and runs at other shapes."""
    module = _Toy().eval()
    spec = _spec()
    path = export_component(module, spec, tmp_path / "toy.onnx", exporter="dynamo", opset=18)
    model = onnx.load(str(path))
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in (*model.graph.input, *model.graph.output)}
    assert dims["x"] == ["batch", 3, "size"] and dims["cache_out_0"] == ["batch", 3, "size_x2"]
    names = [n.name for n in model.graph.node]
    assert any(n.startswith("/block/proj/") for n in names) and len(set(names)) == len(names)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for batch, size in ((1, 2), (4, 8)):
        x = rng.standard_normal((batch, 3, size)).astype(np.float32)
        cache = rng.standard_normal((batch, 3, 2 * size)).astype(np.float32)
        with torch.inference_mode():
            expected = [t.numpy() for t in module(torch.from_numpy(x), torch.from_numpy(cache))]
        for actual, want in zip(session.run(None, {"x": x, "cache_in_0": cache}), expected):
            np.testing.assert_allclose(actual, want, rtol=1e-5, atol=1e-6)


def test_scoped_node_name_is_torchscript_style() -> None:
    """Module scopes minus their parents' prefixes, then the op type; a root op is '/<Op>'."""
    scopes = ["", "model", "model.blocks.0", "model.blocks.0.attn1", "model.blocks.0.attn1.to_q", "linear_5"]
    assert scoped_node_name(scopes, "MatMul") == "/model/blocks.0/attn1/to_q/MatMul"
    assert scoped_node_name(["", "add_3"], "Add") == "/Add"
