"""Identity removal."""

from __future__ import annotations

import onnx_graphsurgeon as gs

from ._graph import bypass


def remove_identity(graph: gs.Graph) -> int:
    """Remove Identity nodes, reading their input directly."""
    # The TorchScript exporter emits one Identity per re-used weight (52 before Add, 52 before Mul, 51 before
    # LayerNormalization in the tiny UNet3D); they hide constants from pattern matchers and quantizers.
    removed = sum(bypass(graph, node) for node in list(graph.nodes) if node.op == "Identity" and node.inputs)
    if removed:
        graph.cleanup(remove_unused_graph_inputs=False)
    return removed
