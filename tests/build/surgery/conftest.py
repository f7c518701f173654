"""Helpers for the surgery tests: tiny graphs, ONNX Runtime runs, before/after comparison."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort
import pytest


class OrtCheck:
    """Build tiny models and compare what ONNX Runtime computes before and after a pass."""

    @staticmethod
    def graph(nodes: list[gs.Node], inputs: list[gs.Variable], outputs: list[gs.Variable], opset: int = 17) -> gs.Graph:
        """A gs graph at the exporter's opset and an IR version ONNX Runtime accepts."""
        return gs.Graph(nodes=nodes, inputs=inputs, outputs=outputs, opset=opset, ir_version=8)

    @staticmethod
    def model(graph: gs.Graph) -> onnx.ModelProto:
        """A checked ModelProto snapshot of `graph` (later edits to the graph do not touch it)."""
        model = gs.export_onnx(graph)
        onnx.checker.check_model(model)
        return model

    @staticmethod
    def run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Outputs of `model` on `feeds`, with ONNX Runtime's own graph rewrites off (we test ours)."""
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return session.run(None, feeds)

    def assert_same(self, before: onnx.ModelProto, after: onnx.ModelProto, feeds: dict, atol: float = 0.0) -> None:
        """Both models give the same outputs (to `atol`) on `feeds`."""
        for a, b in zip(self.run(before, feeds), self.run(after, feeds), strict=True):
            assert a.dtype == b.dtype and a.shape == b.shape
            np.testing.assert_allclose(a, b, rtol=0, atol=atol)


@pytest.fixture
def ortc() -> OrtCheck:
    """The OrtCheck helpers."""
    return OrtCheck()


def ops(graph: gs.Graph) -> list[str]:
    """Op types of the graph's nodes, in order."""
    return [node.op for node in graph.nodes]


@pytest.fixture
def op_list():
    """The `ops` helper."""
    return ops
