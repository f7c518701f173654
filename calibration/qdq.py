"""Read and edit explicit-quantization (Q/DQ) graphs: which tensors and nodes are quantized, their scales."""

from __future__ import annotations

import copy
from collections import defaultdict
from typing import Any

import numpy as np

from t2vtrt.runtime.errors import T2VError

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


def producers(model: Any) -> dict[str, Any]:
    """Tensor name -> the node that writes it."""
    return {out: node for node in model.graph.node for out in node.output}


def consumers(model: Any) -> dict[str, list[Any]]:
    """Tensor name -> the nodes that read it."""
    readers: dict[str, list[Any]] = defaultdict(list)
    for node in model.graph.node:
        for name in node.input:
            readers[name].append(node)
    return readers


def constant_tensors(model: Any) -> set[str]:
    """Initializers and Constant outputs: weights, not activations."""
    names = {t.name for t in model.graph.initializer}
    return names | {out for node in model.graph.node if node.op_type == "Constant" for out in node.output}


def activation_quantizers(model: Any) -> dict[str, Any]:
    """Activation tensor -> the QuantizeLinear that quantizes it (weights excluded)."""
    constants = constant_tensors(model)
    return {n.input[0]: n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in constants}


def _initializers(model: Any) -> dict[str, Any]:
    """Initializer name -> TensorProto."""
    return {t.name: t for t in model.graph.initializer}


def set_activation_scales(model: Any, scales: dict[str, float]) -> None:
    """Overwrite each activation quantizer's scale (keeping its dtype); every one must be given."""
    from onnx import numpy_helper

    inits = _initializers(model)
    missing = sorted(set(activation_quantizers(model)) - set(scales))
    if missing:
        raise T2VError(f"no calibrated scale for {len(missing)} quantized tensors, e.g. {missing[0]}: run `t2vtrt calibrate` again")
    for tensor, q in activation_quantizers(model).items():
        old = numpy_helper.to_array(inits[q.input[1]])
        new = np.full(old.shape, scales[tensor], dtype=old.dtype)
        inits[q.input[1]].CopyFrom(numpy_helper.from_array(new, q.input[1]))


def quantized_nodes(model: Any) -> list[str]:
    """Names of the compute nodes that read a dequantized tensor, in graph order."""
    dq_outputs = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    return [n.name for n in model.graph.node if n.op_type not in QDQ_OPS and any(i in dq_outputs for i in n.input)]


def strip_qdq(model: Any, nodes: set[str]) -> Any:
    """A copy where `nodes` read float tensors again instead of their Q/DQ'd copies; orphan Q/DQ removed."""
    out = copy.deepcopy(model)
    made_by = producers(out)
    stored = _initializers(out)
    for node in out.graph.node:
        if node.name not in nodes:
            continue
        for index, name in enumerate(node.input):
            dq = made_by.get(name)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            q = made_by.get(dq.input[0])
            if q is not None and q.op_type == "QuantizeLinear":
                node.input[index] = q.input[0]
            elif dq.input[0] in stored:  # a stored integer weight or bias (possibly shared with a quantized layer)
                node.input[index] = _dequantized_initializer(out, dq, stored)
            else:
                raise T2VError(f"cannot un-quantize {node.name}: its input {name} is dequantized from an unknown source")
    _remove_orphan_qdq(out)
    return out


def switchable(model: Any, nodes: list[str]) -> tuple[Any, dict[str, str]]:
    """A copy where each of `nodes` reads its Q/DQ'd inputs through If(flag, dequantized, float): (graph, node -> flag).

    Each flag is a bool scalar graph input: one session then measures any set of INT8 nodes (flag true), the
    others reading float tensors exactly as strip_qdq would give them. At real size that is one session instead
    of one per measurement, each of which copied and re-optimised gigabytes of weights. The Q/DQ pair moves into
    the If's then-branch, so a run quantizes only the flagged nodes' inputs: with Where both sides were computed,
    every weight dequantized on every run. A weight stored as integers needs no switch: strip_qdq's float copy of
    it holds the very values its DequantizeLinear computes.
    """
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    made_by = producers(out)
    stored = _initializers(out)
    wanted = set(nodes)
    flags: dict[str, str] = {}
    rebuilt = []
    for node in out.graph.node:
        if node.name in wanted:
            for index, name in enumerate(node.input):
                dq = made_by.get(name)
                if dq is None or dq.op_type != "DequantizeLinear":
                    continue
                q = made_by.get(dq.input[0])
                if q is None or q.op_type != "QuantizeLinear":
                    if dq.input[0] in stored:
                        continue
                    raise T2VError(f"cannot un-quantize {node.name}: its input {name} is dequantized from an unknown source")
                flag = flags.setdefault(node.name, f"t2vtrt_int8_{len(flags)}")
                switched = f"{name}_t2vtrt_sw{len(rebuilt)}"
                rebuilt.append(_qdq_switch(flag, q, dq, switched, _float_type(dq, stored)))
                node.input[index] = switched
        rebuilt.append(node)
    del out.graph.node[:]
    out.graph.node.extend(rebuilt)
    _remove_orphan_qdq(out)  # pairs every reader of which now quantizes inside its own If
    out.graph.input.extend(onnx.helper.make_tensor_value_info(f, onnx.TensorProto.BOOL, []) for f in flags.values())
    return out, flags


def _float_type(dq: Any, stored: dict[str, Any]) -> int:
    """The ONNX element type a DequantizeLinear writes: its scale's (FLOAT when the scale is not an initializer)."""
    import onnx

    scale = stored.get(dq.input[1])
    return scale.data_type if scale is not None else onnx.TensorProto.FLOAT


def _qdq_switch(flag: str, q: Any, dq: Any, output: str, elem_type: int) -> Any:
    """If(flag) -> DQ(Q(x)) computed in the then-branch (copies of q and dq, reading the outer graph), else x itself."""
    import onnx
    from onnx import helper

    local_q, local_dq = onnx.NodeProto(), onnx.NodeProto()
    local_q.CopyFrom(q)
    local_dq.CopyFrom(dq)
    local_q.name, local_dq.name = f"{output}_Q", f"{output}_DQ"
    local_q.output[0] = local_dq.input[0] = f"{output}_q"
    local_dq.output[0] = f"{output}_dq"
    then = helper.make_graph([local_q, local_dq], f"{output}_int8", [], [helper.make_tensor_value_info(f"{output}_dq", elem_type, None)])
    keep = helper.make_node("Identity", [q.input[0]], [f"{output}_float"], name=f"{output}_Id")
    other = helper.make_graph([keep], f"{output}_fp", [], [helper.make_tensor_value_info(f"{output}_float", elem_type, None)])
    return helper.make_node("If", [flag], [output], name=output, then_branch=then, else_branch=other)


def _dequantized_initializer(model: Any, dq: Any, stored: dict[str, Any]) -> str:
    """Add (once) a float32 initializer equal to what `dq` computes from its stored input; return its name."""
    from onnx import numpy_helper

    from t2vtrt.build.graphfiles import read_array  # a weight may still be on disk

    name = f"{dq.output[0]}_float"
    if name in stored:
        return name
    values = read_array(stored[dq.input[0]]).astype(np.float64)
    scale = read_array(stored[dq.input[1]]).astype(np.float64)
    zero = read_array(stored[dq.input[2]]).astype(np.float64) if len(dq.input) > 2 and dq.input[2] else 0.0
    axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
    if np.ndim(scale) == 1 and values.ndim > 1:  # per channel: broadcast along `axis`
        shape = [1] * values.ndim
        shape[axis] = -1
        scale, zero = scale.reshape(shape), np.reshape(zero, shape) if np.ndim(zero) == 1 else zero
    tensor = numpy_helper.from_array(((values - zero) * scale).astype(np.float32), name)
    model.graph.initializer.append(tensor)
    stored[name] = tensor
    return name


def _remove_orphan_qdq(model: Any) -> None:
    """Drop Q/DQ nodes nobody reads (a DQ first, then the Q it leaves orphaned)."""
    graph_outputs = {o.name for o in model.graph.output}
    while True:
        read = {name for node in model.graph.node for name in node.input} | graph_outputs
        dead = [n for n in model.graph.node if n.op_type in QDQ_OPS and not any(o in read for o in n.output)]
        if not dead:
            return
        for node in dead:
            model.graph.node.remove(node)


def nodes_touching_qdq(model: Any, nodes: set[str]) -> list[str]:
    """Which of `nodes` read a DequantizeLinear output (should be none for FP16-fallback nodes)."""
    made_by = producers(model)
    return [
        n.name
        for n in model.graph.node
        if n.name in nodes and any(made_by.get(i) is not None and made_by[i].op_type == "DequantizeLinear" for i in n.input)
    ]


def unquantize_fallbacks(model: Any, nodes: set[str]) -> tuple[Any, int]:
    """Make FP16-fallback nodes read float tensors where a shared Q/DQ pair reached them; (model, how many)."""
    touching = nodes_touching_qdq(model, nodes)
    return (strip_qdq(model, set(touching)) if touching else model), len(touching)
