"""Dead-node removal and topological sort."""

from __future__ import annotations

import onnx_graphsurgeon as gs


def cleanup(graph: gs.Graph) -> int:
    """Drop nodes and tensors that reach no output, then sort the nodes topologically."""
    before = len(graph.nodes)
    # Unused graph inputs stay: they are part of the component's declared interface.
    graph.cleanup(remove_unused_graph_inputs=False).toposort()
    return before - len(graph.nodes)
