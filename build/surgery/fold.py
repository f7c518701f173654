"""Constant folding, including static shape arithmetic, to a fixed point."""

from __future__ import annotations

import onnx_graphsurgeon as gs

from ._graph import read_foldable_constants
from .shapes import infer_shapes

# Each round exposes new static shapes (e.g. the attention scale computed from a Shape->Slice->Cast->Sqrt
# chain folds once the head size is known); three rounds reach the fixed point for the UNet3D export.
_MAX_ROUNDS = 8


def fold_constants(graph: gs.Graph) -> int:
    """Fold constant subgraphs and static Shape/Gather/Concat arithmetic, inferring shapes between rounds."""
    before = len(graph.nodes)
    for _ in range(_MAX_ROUNDS):
        count = len(graph.nodes)
        infer_shapes(graph)
        read_foldable_constants(graph)  # ONNX Runtime evaluates them: it cannot read weights left on disk
        # What polygraphy's fold_constants does, on our graph in place: ONNX Runtime evaluates the constant
        # subgraphs; fold_shapes turns Shape of a statically known dimension into a constant.
        graph.fold_constants(fold_shapes=True, error_ok=True).cleanup(remove_unused_graph_inputs=False)
        if len(graph.nodes) == count:
            break  # the last inference saw this graph: annotations are current for the passes after us
    else:
        infer_shapes(graph)
    return before - len(graph.nodes)
