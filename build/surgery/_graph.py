"""Small graph helpers the passes share: producers, constants, dtypes, bypassing a node, the opset."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from t2vtrt.build.graphfiles import on_disk


def producer(tensor: gs.Tensor) -> gs.Node | None:
    """The node that writes `tensor`, or None for graph inputs and constants."""
    return tensor.inputs[0] if tensor.inputs else None


def sole_consumer(tensor: gs.Tensor) -> gs.Node | None:
    """The only node that reads `tensor`, or None when zero or several do."""
    return tensor.outputs[0] if len(tensor.outputs) == 1 else None


def const_values(tensor: gs.Tensor) -> np.ndarray | None:
    """The values of a constant tensor, or None when it is computed at run time."""
    if not isinstance(tensor, gs.Constant):
        return None
    # A weight still on disk is read for this look only: `.values` would keep it in memory for good, and
    # matchers look at many weights they then leave alone.
    return tensor._values.load() if on_disk(tensor) else tensor.values


def read_foldable_constants(graph: gs.Graph) -> int:
    """Read in the on-disk constants that constant folding may evaluate; return how many were read.

    graphsurgeon folds by running ONNX Runtime on the constant subgraph, exported as it is: a weight still
    on disk is an absolute file reference there, which ONNX Runtime refuses, and that call folds nothing (the
    real-size text encoder's position-embedding Gather, whose ids are a Slice of a Constant node up to a
    Shape's sequence axis). Only the constants that feed nodes computable from constants are read.
    """
    foldable: set[int] = set()  # ids of tensors computable from constants
    grew = True
    while grew:  # to a fixed point, in the graph's own order (sorting it here would reorder the output)
        grew = False
        for node in graph.nodes:
            if node.outputs and not all(id(t) in foldable for t in node.outputs) and _computable(node, foldable):
                foldable.update(id(t) for t in node.outputs)
                grew = True
    read = 0
    for node in graph.nodes:
        if node.outputs and all(id(t) in foldable for t in node.outputs):
            for tensor in node.inputs:
                if on_disk(tensor):
                    tensor.values  # noqa: B018 - the property read keeps the values in memory
                    read += 1
    return read


def _computable(node: gs.Node, foldable: set[int]) -> bool:
    """Whether folding may compute the node's outputs: a Constant or Shape node, or one whose every input is constant or foldable.

    Constant nodes take no inputs (their value is an attribute). A Shape counts even when some dimensions are
    unknown: graphsurgeon's fold_shapes turns the known dimensions its readers pick (the sequence axis under a
    dynamic batch) into constants within the same call. Over-counting costs only reading a weight early.
    """
    if node.op in ("Constant", "Shape"):
        return True
    return bool(node.inputs) and all(isinstance(t, gs.Constant) or id(t) in foldable or not t.name for t in node.inputs)


def node_label(node: gs.Node) -> str:
    """A name for nodes derived from `node`: its own, or its first output's (unique) when it has none."""
    return node.name or node.outputs[0].name


def column_bias(add: gs.Node, tensor: gs.Tensor, columns: int) -> tuple[gs.Constant, bool] | None:
    """The constant 1-D bias of `columns` values an Add adds to `tensor`, and whether it is the Add's first input."""
    if add.op != "Add" or len(add.inputs) != 2 or len(add.outputs) != 1:
        return None
    if not any(t is tensor for t in add.inputs):
        return None
    first = add.inputs[1] is tensor
    other = add.inputs[0] if first else add.inputs[1]
    values = const_values(other)
    return (other, first) if other is not tensor and values is not None and values.shape == (columns,) else None


def numel(shape: Sequence | None) -> int | None:
    """Element count of a static shape; None when any dimension is unknown."""
    if shape is None or not all(isinstance(d, int) for d in shape):
        return None
    return math.prod(shape)


def np_dtype(dtype: object) -> np.dtype | None:
    """A numpy dtype from whatever graphsurgeon holds (numpy type, ONNX enum, None)."""
    if dtype is None:
        return None
    try:
        if isinstance(dtype, (int, np.integer)) and not isinstance(dtype, bool):
            return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(int(dtype)))
        return np.dtype(dtype)
    except (TypeError, KeyError, ValueError):
        return None


def tensor_dtype(tensor: gs.Tensor) -> np.dtype | None:
    """The element type of a tensor when known (constants always, variables after shape inference)."""
    return np_dtype(tensor.dtype)


def is_io(graph: gs.Graph, tensor: gs.Tensor) -> bool:
    """Whether `tensor` is a graph input or output (its name is part of the model's contract)."""
    return any(t is tensor for t in graph.inputs) or any(t is tensor for t in graph.outputs)


def swap(tensors: list, old: gs.Tensor, new: gs.Tensor) -> None:
    """Replace `old` by `new` in a node's input or output list (item by item: graphsurgeon keeps links in sync)."""
    for i, tensor in enumerate(tensors):
        if tensor is old:
            tensors[i] = new


def bypass(graph: gs.Graph, node: gs.Node) -> bool:
    """Remove a one-in/one-out pass-through node, wiring its readers to its input; False if it must stay."""
    # Readers are found through tensor links, which do not reach If/Loop bodies; the exported
    # components have no control flow (a model that does should run cleanup-only surgery).
    inp, out = node.inputs[0], node.outputs[0]
    if any(t is out for t in graph.outputs):
        # Keep the output's name: make the input's producer write it directly, if there is one we may rename.
        src = producer(inp)
        if src is None or is_io(graph, inp):
            return False
        node.inputs.clear()
        node.outputs.clear()
        for reader in list(inp.outputs):
            swap(reader.inputs, inp, out)
        swap(src.outputs, inp, out)
        return True
    node.inputs.clear()
    node.outputs.clear()
    for reader in list(out.outputs):
        swap(reader.inputs, out, inp)
    return True


def set_opset(graph: gs.Graph, version: int) -> None:
    """Raise the default-domain opset (and the IR version it needs) of the graph."""
    graph.opset = version
    for entry in graph.import_domains or []:
        if entry.domain in ("", "ai.onnx"):
            entry.version = version
    needed = onnx.helper.find_min_ir_version_for([onnx.helper.make_opsetid("", version)])
    graph.ir_version = max(graph.ir_version or 0, needed)


MS_DOMAIN = "com.microsoft"  # ONNX Runtime's contrib ops


def import_domain(graph: gs.Graph, domain: str, version: int = 1) -> None:
    """Declare `domain` in the graph's opset imports (export_onnx writes import_domains as they are)."""
    imports = list(graph.import_domains or [onnx.helper.make_opsetid("", graph.opset)])
    if not any(entry.domain == domain for entry in imports):
        imports.append(onnx.helper.make_opsetid(domain, version))
    graph.import_domains = imports
