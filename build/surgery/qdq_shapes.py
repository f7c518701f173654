"""Shape nodes read the quantized tensor, not its DequantizeLinear: the float copy is never made for them.

Why: a quantized graph dequantizes the LayerNorm output that attention's Q/K/V projections read, and the
exporter's Shape (for the head reshape) reads that same float tensor. ONNX Runtime fuses the DQ into each
projection (MatMulIntegerToFloat) but must still run it for the Shape: 32 DequantizeLinear passes over
e.g. (2048,16,64) tensors, 26 ms of a 1.4 s INT8 bench denoiser call, only to read a shape. Dequantize
keeps the shape, so Shape may read its integer input instead. Not past a QuantizeLinear: a float reader
of a Conv output keeps ONNX Runtime from fusing the Conv into QLinearConv (46 convolutions went float).
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from ._graph import producer


def shapes_skip_dequantize(graph: gs.Graph) -> int:
    """Point Shape nodes that read a DequantizeLinear output at its quantized input; return how many moved."""
    moved = 0
    for node in [n for n in graph.nodes if n.op == "Shape"]:
        writer = producer(node.inputs[0])
        if writer is not None and writer.op == "DequantizeLinear":
            node.inputs[0] = writer.inputs[0]
            moved += 1
    if moved:
        graph.cleanup(remove_unused_graph_inputs=False)
    return moved
