"""Opt-in: Reshape+InstanceNormalization+Reshape(+Mul+Add) -> one opset-21 GroupNormalization.

NOT in the default pipeline, on purpose:
- GroupNormalization exists in the default domain only from opset 18, and its opset-18 form (per-group
  scale/bias) is deprecated: onnx>=1.16's checker rejects it. So the fused node is the opset-21 form
  (per-channel scale/bias, which lets the Mul+Add fold in) and the pass raises the graph to opset 21.
  ONNX Runtime at opset 17 has no GroupNormalization; at 21 it runs it (1.24 expands the function).
- TensorRT's ONNX parser maps GroupNormalization onto INormalizationLayer, which wants per-group scale
  and bias; opset-21 per-channel scale/bias fail to parse (NVIDIA/TensorRT#4336, #4313, TensorRT 10.7),
  while Reshape+InstanceNormalization+Reshape imports fine. The old TensorRT GroupNorm plugins are
  deprecated in TensorRT 10 in favour of that native path.
- TensorRT <= 10.16 computes num_groups == 1 as instance norm (NVIDIA/TensorRT#4756): never fused here.
Use it for runtimes that have a fused GroupNormalization kernel at opset 21.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from t2vtrt.runtime.errors import T2VError

from ._graph import const_values, producer, set_opset, sole_consumer
from .shapes import infer_shapes

GROUP_NORM_OPSET = 21

# Ops whose meaning changes between opset 17 and 21 (attribute moved to an input, or renamed modes):
# raising the opset under them would silently change or break the graph.
_OPSET_SENSITIVE = {
    "ReduceMean": "axes", "ReduceMax": "axes", "ReduceMin": "axes", "ReduceProd": "axes",
    "ReduceL1": "axes", "ReduceL2": "axes", "ReduceLogSum": "axes", "ReduceLogSumExp": "axes",
    "ReduceSumSquare": "axes", "DFT": "axis", "GridSample": "mode",
}


@dataclass
class _Match:
    """One GroupNorm pattern: input, final output tensor, groups, epsilon and the fused per-channel affine."""

    x: gs.Tensor
    out: gs.Tensor
    groups: int
    epsilon: float
    scale: np.ndarray
    bias: np.ndarray
    name: str


def _per_channel(tensor: gs.Tensor, rank: int) -> np.ndarray | None:
    """The [C] vector of a constant shaped to broadcast along axis 1 of a rank-`rank` tensor."""
    values = const_values(tensor)
    if values is None or values.ndim == 0:
        return None
    shape = list(values.shape)
    if len(shape) == rank - 1 and shape[1:] == [1] * (rank - 2):
        return values.reshape(-1)
    if len(shape) == rank and shape[0] == 1 and shape[2:] == [1] * (rank - 2):
        return values.reshape(-1)
    return None


def _affine_step(tensor: gs.Tensor, op: str, rank: int) -> tuple[gs.Node, np.ndarray] | None:
    """The sole Mul/Add reading `tensor` with a per-channel constant on the other side."""
    node = sole_consumer(tensor)
    if node is None or node.op != op or len(node.inputs) != 2:
        return None
    other = node.inputs[1] if node.inputs[0] is tensor else node.inputs[0]
    vector = _per_channel(other, rank)
    return (node, vector) if vector is not None else None


def _restores_shape_of(shape_input: gs.Tensor, x: gs.Tensor) -> bool:
    """Whether a Reshape target is Shape(x) (dynamic) or x's own static shape."""
    src = producer(shape_input)
    if src is not None:
        return src.op == "Shape" and src.inputs[0] is x and not src.attrs.get("start") and "end" not in src.attrs
    values = const_values(shape_input)
    static = x.shape is not None and all(isinstance(d, int) for d in x.shape)
    return values is not None and static and values.tolist() == list(x.shape)


def _match(inorm: gs.Node) -> _Match | None:
    """Match the exporter's GroupNorm around one InstanceNormalization node."""
    first = producer(inorm.inputs[0])
    in_scale, in_bias = const_values(inorm.inputs[1]), const_values(inorm.inputs[2])
    if first is None or first.op != "Reshape" or in_scale is None or in_bias is None:
        return None
    x, groups = first.inputs[0], in_scale.size
    target = const_values(first.inputs[1])
    if x.shape is None or len(x.shape) < 3 or target is None or groups < 2:
        return None  # groups == 1: see the module docstring (TensorRT bug)
    if target.tolist()[1:] != [groups, -1] or not (
        (target[0] == 0 and not first.attrs.get("allowzero", 0)) or target[0] == x.shape[0]
    ):
        return None
    second = sole_consumer(inorm.outputs[0])
    if sole_consumer(first.outputs[0]) is not inorm or second is None or second.op != "Reshape":
        return None
    if not _restores_shape_of(second.inputs[1], x):
        return None
    rank, out = len(x.shape), second.outputs[0]
    channels = x.shape[1] if isinstance(x.shape[1], int) else None
    gamma = beta = None
    if (mul := _affine_step(out, "Mul", rank)) is not None:
        out, gamma = mul[0].outputs[0], mul[1]
        if (add := _affine_step(out, "Add", rank)) is not None:
            out, beta = add[0].outputs[0], add[1]
        channels = gamma.size
    if channels is None or channels % groups or (beta is not None and beta.size != channels):
        return None
    per_group = channels // groups
    dtype = in_scale.dtype
    gamma = np.ones(channels, dtype) if gamma is None else gamma.astype(dtype)
    beta = np.zeros(channels, dtype) if beta is None else beta.astype(dtype)
    # gamma * (s_g * n + b_g) + beta == (gamma * s_g) * n + (gamma * b_g + beta); exact when s=1, b=0.
    scale = gamma * np.repeat(in_scale, per_group)
    bias = gamma * np.repeat(in_bias, per_group) + beta
    eps = float(inorm.attrs.get("epsilon", 1e-5))
    return _Match(x, out, groups, eps, scale.astype(dtype), bias.astype(dtype), inorm.name)


def _require_opset(graph: gs.Graph, version: int) -> None:
    """Raise the graph's opset to `version`, refusing when an op would change meaning on the way."""
    if graph.opset >= version:
        return
    if graph.opset < 17:
        raise T2VError(f"fuse_group_norm needs an opset >= 17 model, got opset {graph.opset}; re-export at 17")
    for node in graph.nodes:
        attr = _OPSET_SENSITIVE.get(node.op)
        if attr is not None and attr in node.attrs:
            raise T2VError(
                f"fuse_group_norm raises the opset to {version}, which changes {node.op} ({node.name}); "
                "convert the model with onnx.version_converter first"
            )
    set_opset(graph, version)


def fuse_group_norm(graph: gs.Graph) -> int:
    """Fuse Reshape+InstanceNormalization+Reshape(+Mul+Add) into one opset-21 GroupNormalization (opt-in)."""
    infer_shapes(graph)  # the match needs the rank of each normalized tensor
    matches = [m for node in list(graph.nodes) if node.op == "InstanceNormalization" and (m := _match(node))]
    if not matches:
        return 0
    _require_opset(graph, GROUP_NORM_OPSET)
    for m in matches:
        m.out.inputs.clear()  # detach from the old tail (Reshape, Mul or Add); cleanup drops the rest
        graph.nodes.append(
            gs.Node(
                "GroupNormalization",
                name=f"{m.name}/group_norm",
                attrs={"num_groups": m.groups, "epsilon": m.epsilon},
                inputs=[m.x, gs.Constant(f"{m.name}/gn_scale", m.scale), gs.Constant(f"{m.name}/gn_bias", m.bias)],
                outputs=[m.out],
            )
        )
    graph.cleanup(remove_unused_graph_inputs=False).toposort()
    return len(matches)
