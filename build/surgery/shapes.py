"""Shape inference on a weight-free copy of the graph, so it works for models of any size."""

from __future__ import annotations

import onnx
import onnx_graphsurgeon as gs

from ._graph import numel, swap

# Shape inference needs the *values* only of small shape-carrying constants (Reshape targets, Slice bounds);
# anything bigger is a weight whose type and shape are enough. Leaving weights out keeps the model far
# below protobuf's 2 GB limit, so a 5 GB denoiser needs no external-data round trip to be inferred.
_KEEP_VALUES_UP_TO = 64


def _skeleton(graph: gs.Graph) -> onnx.ModelProto:
    """The graph as a model whose large constants are typed inputs and whose intermediates are unannotated."""
    skel = graph.copy()  # copies share constant values: nothing is duplicated
    io = {id(t) for t in skel.inputs + skel.outputs}
    for tensor in list(skel.tensors().values()):
        if isinstance(tensor, gs.Constant):
            size = numel(tensor.shape)
            if size is None or size > _KEEP_VALUES_UP_TO:
                typed = gs.Variable(tensor.name, dtype=tensor.dtype, shape=list(tensor.shape))
                for reader in list(tensor.outputs):
                    swap(reader.inputs, tensor, typed)
                skel.inputs.append(typed)
        elif id(tensor) not in io:
            # Stale annotations from before a rewrite would contradict inference; start clean.
            tensor.dtype, tensor.shape = None, None
    return gs.export_onnx(skel, do_type_check=False)


def inferred_types(graph: gs.Graph) -> dict[str, tuple]:
    """Map tensor name -> (dtype, shape) as ONNX shape inference (with data propagation) derives them."""
    model = onnx.shape_inference.infer_shapes(_skeleton(graph), strict_mode=False, data_prop=True)
    return {t.name: (t.dtype, t.shape) for t in gs.import_onnx(model).tensors().values() if isinstance(t, gs.Variable) and t.dtype is not None}


def infer_shapes(graph: gs.Graph) -> int:
    """Annotate intermediate tensors with inferred dtypes and shapes; return how many annotations changed."""
    types = inferred_types(graph)
    io = {id(t) for t in graph.inputs + graph.outputs}
    changed = 0
    for name, tensor in graph.tensors().items():
        if not isinstance(tensor, gs.Variable) or name not in types:
            continue
        dtype, shape = types[name]
        if id(tensor) in io and tensor.dtype is not None and tensor.shape is not None:
            continue  # the exporter's names for dynamic axes ("batch", "frames") are worth keeping
        if shape is None and tensor.shape is not None and tensor.dtype == dtype:
            continue  # inference learned less than we know
        if tensor.dtype != dtype or tensor.shape != shape:
            tensor.dtype, tensor.shape = dtype, shape
            changed += 1
    return changed
