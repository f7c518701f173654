"""TensorRT-style explicit quantization: Q/DQ nodes placed as ModelOpt places them, with the weights left on disk.

Which nodes are quantized is ModelOpt's INT8 decision (its TensorRT fusion patterns: Conv/MatMul/Gemm inputs,
the residual input of fusible Adds, Conv->LayerNorm, GEMV and small-channel exclusions), asked of the graph's
structure and shapes alone. The Q/DQ nodes are then inserted here the way ModelOpt's onnxruntime-based
quantizer inserts them: one shared pair per tensor read by every reader (except the inputs ModelOpt marks
unquantized and the FP16-fallback nodes), symmetric INT8, per-tensor activations, per-channel weights kept in
FP32 behind their own Q/DQ pair, no bias and no output quantization.

Why not ModelOpt's `quantize()` itself: it loads the weights into memory several times over (the graph, its
graphsurgeon copy, the GEMV probe's copy, onnxruntime's quantizer and calibration sessions) and calibrates
ranges we then replace. On the 1.41B-parameter UNet3D (5.43 GB graph) it was OOM-killed at 22.1 GB on a 24 GB
host. Here a weight is read twice (its per-channel |max|, then when the graph is saved) and never held beyond
itself; one ONNX Runtime run on the first captured call measures the MatMul shapes ModelOpt's GEMV rule
reads. tests/calibration/test_placement.py holds the result to ModelOpt's own graph on a real model: the same
quantized tensors, the same readers, the same weight scales.

Call `write_qdq_graph` in a child process (isolate.run_isolated): ModelOpt's registry setup patches
onnxruntime's quantization classes process-wide. The selection calls two of ModelOpt's private functions
(`int8._find_nodes_to_quantize`, `graph_utils._exclude_matmuls_by_inference`): constraints.txt pins
nvidia-modelopt, and the oracle test fails the day an upgrade changes what they decide.
"""

from __future__ import annotations

import logging
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from t2vtrt.runtime.errors import T2VError

# Ops whose input 1 is a weight, quantized per output channel (weight_axis: ModelOpt's settings for onnxruntime).
WEIGHT_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
# Ops whose QDQ quantizer quantizes only input 0 (the others are statistics, sizes or parameters).
FIRST_INPUT_ONLY = ("LayerNormalization", "BatchNormalization", "InstanceNormalization", "LRN", "Resize")
FLOAT_TYPES = (1, 10, 16)  # FLOAT, FLOAT16, BFLOAT16
QMAX = 127.0  # symmetric INT8: [-127, 127], as onnxruntime's symmetric weights and TensorRT use
Edge = tuple[str, int]  # (reader node, input index)
# Recorded with a layout graph: a layout made by another placement rule is made again.
PLACEMENT_VERSION = "modelopt-0.47-rules/2"


def weight_axis(node: Any) -> int:
    """The output-channel axis of a Conv/ConvTranspose/MatMul/Gemm weight (input 1)."""
    if node.op_type == "Gemm":
        return 0 if any(a.name == "transB" and a.i for a in node.attribute) else 1
    return {"Conv": 0, "ConvTranspose": 1, "MatMul": 1}[node.op_type]


def _quantizable_op_types(op_types: list[str]) -> set[str]:
    """Op types ModelOpt lets onnxruntime's QDQ quantizer touch (after ModelOpt's registry setup)."""
    from modelopt.onnx.quantization.ort_utils import configure_ort
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    configure_ort(op_types, [], calibration_eps=["cpu"])
    return set(QDQRegistry) | set(QLinearOpsRegistry)


def shape_probe(model: Any) -> Any:
    """A copy for ONNX shape inference, which refuses the absolute weight locations load_graph gives (it reads no weight)."""
    import onnx

    from t2vtrt.build.graphfiles import all_tensors, is_external

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for tensor in all_tensors(probe):
        if is_external(tensor):
            location = next(e for e in tensor.external_data if e.key == "location")
            location.value = Path(location.value).name
    return probe


def _tensor_types(model: Any) -> dict[str, int]:
    """Element type of every tensor, from ONNX shape inference (weights stay on disk: it reads none)."""
    from onnx import shape_inference

    inferred = shape_inference.infer_shapes(shape_probe(model))
    graph = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in (*graph.value_info, *graph.input, *graph.output)}
    types.update({t.name: t.data_type for t in model.graph.initializer})
    return types


def _shapes_only(graph: Any) -> None:
    """Give every weight still on disk zero-stride stand-in values of its shape: ModelOpt's rules read weights' shapes only."""
    from onnx import helper
    from onnx_graphsurgeon.ir.tensor import LazyValues

    from t2vtrt.build.graphfiles import is_external

    for tensor in graph.tensors().values():
        values = getattr(tensor, "_values", None)
        if isinstance(values, LazyValues) and is_external(values.tensor):
            proto = values.tensor
            dtype = helper.tensor_dtype_to_np_dtype(proto.data_type)
            tensor._values = np.broadcast_to(np.zeros((), dtype=dtype), tuple(proto.dims))


def _measured_shapes(model: Any, source: Path, names: list[str], feed: dict[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
    """The shapes of `names` in one ONNX Runtime run on `feed`: a Shape node per tensor, so only shapes come out."""
    import onnx
    from onnx import TensorProto, helper

    from t2vtrt.build.graphfiles import run_probe

    probe = onnx.ModelProto()
    probe.CopyFrom(model)  # weights are references to their files: a small copy
    outputs = {name: f"{name}/t2vtrt_shape" for name in names}
    probe.graph.node.extend(helper.make_node("Shape", [name], [out]) for name, out in outputs.items())
    del probe.graph.output[:]
    probe.graph.output.extend(helper.make_tensor_value_info(out, TensorProto.INT64, [None]) for out in outputs.values())
    values = run_probe(probe, source, feed, "shapes")
    return {name: tuple(int(d) for d in values[out]) for name, out in outputs.items()}


def _gemv_exclusions(model: Any, graph: Any, source: Path, feed: dict[str, np.ndarray]) -> list[str]:
    """ModelOpt's GEMV / small-GEMM rule (`_exclude_matmuls_by_inference`) on MatMul shapes measured in one run on `feed`."""
    from modelopt.onnx.quantization import graph_utils
    from onnx_graphsurgeon import Variable

    matmuls = [n for n in graph.nodes if n.op in {"MatMul", "Gemm"}]
    if not matmuls:
        return []
    names = list(dict.fromkeys([n.outputs[0].name for n in matmuls] + [n.inputs[1].name for n in matmuls if isinstance(n.inputs[1], Variable)]))
    shapes = _measured_shapes(model, source, names, feed)
    measured = {name: np.broadcast_to(np.zeros((), np.uint8), shape) for name, shape in shapes.items()}  # shapes, no data
    run = graph_utils.get_extended_model_outputs
    graph_utils.get_extended_model_outputs = lambda *args, **kwargs: measured  # ModelOpt's own run would load every weight
    try:
        return list(graph_utils._exclude_matmuls_by_inference("", shape_probe(model), matmuls, False, [], None, ["cpu"]))
    finally:
        graph_utils.get_extended_model_outputs = run


def _modelopt_selection(model: Any, source: Path, feed: dict[str, np.ndarray], exclude: list[str]) -> tuple[list[str], set[tuple[str, str]]]:
    """ModelOpt's INT8 choice: (nodes to quantize, (reader, tensor) inputs left unquantized), from structure and shapes."""
    import onnx_graphsurgeon as gs
    from modelopt.onnx.quantization import graph_utils, int8
    from modelopt.onnx.quantization.ort_utils import get_quantizable_op_types

    graph = gs.import_onnx(model)
    graph.toposort()
    _shapes_only(graph)
    excluded = graph_utils.find_nodes_to_exclude(graph, _gemv_exclusions(model, graph, source, feed) + list(exclude), [])
    excluded.extend(graph_utils.find_nodes_from_convs_to_exclude(graph, quantize_mode="int8"))
    nodes, no_quantize = int8._find_nodes_to_quantize(graph, get_quantizable_op_types([]), excluded)
    skip = set(excluded)
    return [n.name for n in nodes if n.name not in skip], {(dst.name, tensor) for _, dst, tensor in no_quantize}


def select_tensors(model: Any, source: Path, feed: dict[str, np.ndarray], exclude: Sequence[str] = ()) -> dict[str, list[Edge]]:
    """Quantized tensor -> the reader inputs that read its dequantized copy, in graph order.

    `model` is the graph at `source`; `feed`: one denoiser call whose shapes ModelOpt's GEMV check measures (as
    ModelOpt runs its calibration data); `exclude`: nodes that stay in float (they never read a dequantized tensor).
    """
    nodes = {n.name: n for n in model.graph.node}
    selected, no_quantize = _modelopt_selection(model, source, feed, list(exclude))
    quantizable = _quantizable_op_types(sorted({n.op_type for n in model.graph.node}))
    types = _tensor_types(model)
    tensors: dict[str, None] = {}
    for name in selected:
        node = nodes[name]
        if node.op_type not in quantizable:
            continue
        picked = [0] if node.op_type in FIRST_INPUT_ONLY else [0, 1] if node.op_type in WEIGHT_OPS else range(len(node.input))
        for index in picked:
            if index < len(node.input) and node.input[index] and types.get(node.input[index]) in FLOAT_TYPES:
                tensors[node.input[index]] = None
    kept_float = set(exclude)
    readers: dict[str, list[Edge]] = defaultdict(list)
    for node in model.graph.node:
        if node.name in kept_float:
            continue
        for index, name in enumerate(node.input):
            if name in tensors and (node.name, name) not in no_quantize:
                readers[name].append((node.name, index))
    return {t: readers[t] for t in tensors if readers.get(t)}


def _weight_axes(model: Any, readers: dict[str, list[Edge]], constants: set[str]) -> dict[str, int | None]:
    """Per quantized constant: its per-channel axis when a weight op reads it as input 1, else None (per-tensor)."""
    nodes = {n.name: n for n in model.graph.node}
    axes: dict[str, int | None] = {}
    for tensor, edges in readers.items():
        if tensor not in constants:
            continue
        weight_reads = [nodes[n] for n, i in edges if i == 1 and nodes[n].op_type in WEIGHT_OPS]
        axes[tensor] = weight_axis(weight_reads[0]) if weight_reads else None
    return axes


def weight_scale(values: np.ndarray, axis: int | None) -> np.ndarray:
    """Symmetric INT8 scale of a weight, per channel along `axis` (a scalar for None); zero ranges get 1.0."""
    values = np.abs(np.asarray(values, dtype=np.float32))
    absmax = values.max() if axis is None else values.max(axis=tuple(a for a in range(values.ndim) if a != axis % values.ndim))
    scale = np.asarray(absmax, dtype=np.float32) / np.float32(QMAX)
    return np.where(scale > 0, scale, np.float32(1.0)).astype(np.float32)


def qdq_pair(tensor: str, axis: int | None) -> list[Any]:
    """QuantizeLinear -> DequantizeLinear of `tensor` with its `<tensor>_scale` / `_zero_point` (ModelOpt's names)."""
    from onnx import helper

    q_out, params = f"{tensor}_QuantizeLinear_Output", [f"{tensor}_scale", f"{tensor}_zero_point"]
    pair = [
        helper.make_node("QuantizeLinear", [tensor, *params], [q_out], name=f"{tensor}_QuantizeLinear"),
        helper.make_node("DequantizeLinear", [q_out, *params], [f"{tensor}_DequantizeLinear_Output"], name=f"{tensor}_DequantizeLinear"),
    ]
    if axis is not None:
        for node in pair:
            node.attribute.append(helper.make_attribute("axis", axis))
    return pair


def insert_qdq(model: Any, readers: dict[str, list[Edge]], scales: dict[str, float]) -> Any:
    """`model` with a shared Q/DQ pair per tensor of `readers` (edited in place and returned).

    Activation scales come from `scales` (1.0 where missing: set_activation_scales fills them later); weights get
    per-channel scales from their values, read one weight at a time.
    """
    from onnx import numpy_helper

    from t2vtrt.build.graphfiles import read_array
    from t2vtrt.calibration.qdq import constant_tensors

    constants = constant_tensors(model)
    initializers = {t.name: t for t in model.graph.initializer}
    axes = _weight_axes(model, readers, constants)
    pairs: dict[str, list[Any]] = {}
    for tensor in readers:
        if tensor in constants and tensor not in initializers:
            raise T2VError(f"cannot quantize {tensor}: a Constant node's output, not an initializer; run `t2vtrt surgery` again")
        axis = axes.get(tensor)
        if tensor in constants:
            scale = weight_scale(read_array(initializers[tensor]), axis)
        else:
            scale = np.float32(scales.get(tensor, 1.0))
        zero = np.zeros(np.shape(scale), dtype=np.int8)
        model.graph.initializer.extend(
            [numpy_helper.from_array(np.asarray(scale), f"{tensor}_scale"), numpy_helper.from_array(zero, f"{tensor}_zero_point")]
        )
        pairs[tensor] = qdq_pair(tensor, axis if np.ndim(scale) == 1 else None)
    rewire(model, readers, {t: f"{t}_DequantizeLinear_Output" for t in readers}, pairs)
    return model


def rewire(model: Any, readers: dict[str, list[Edge]], dequantized: dict[str, str], added: dict[str, list[Any]]) -> None:
    """Point each reader input at its tensor's dequantized name; insert each tensor's `added` nodes right after its producer."""
    nodes = {n.name: n for n in model.graph.node}
    for tensor, edges in readers.items():
        for name, index in edges:
            nodes[name].input[index] = dequantized[tensor]
    produced_at = {out: n.name for n in model.graph.node for out in n.output}
    after: dict[str | None, list[Any]] = defaultdict(list)  # producer -> nodes to insert right after it (None: first)
    for tensor, new in added.items():
        after[produced_at.get(tensor)].extend(new)
    ordered = list(after.pop(None, []))
    for node in model.graph.node:
        ordered.append(node)
        ordered.extend(after.pop(node.name, []))
    del model.graph.node[:]
    model.graph.node.extend(ordered)


def write_qdq_graph(
    source: str, output: str, data: str, crops: dict[str, dict[int, int]] | None, nodes_to_exclude: list[str], scales: dict[str, float] | None = None
) -> dict[str, Any]:
    """The source graph with ModelOpt-placed Q/DQ, FP32 elsewhere, saved atomically to `output` (weights streamed)."""
    from t2vtrt.build.graphfiles import load_graph, save_graph
    from t2vtrt.build.precision import quiet_modelopt
    from t2vtrt.calibration.reader import tool_feeds

    logging.getLogger().setLevel(logging.ERROR)
    quiet_modelopt()
    model = load_graph(Path(source))
    readers = select_tensors(model, Path(source), tool_feeds(data, 1, crops)[0], nodes_to_exclude)
    insert_qdq(model, readers, scales or {})
    save_graph(model, Path(output))
    return {"quantized_tensors": len(readers), "quantized_inputs": sum(len(e) for e in readers.values())}


def write_quantized_graphs(
    source: str,
    int8_qdq: str,
    int8: str,
    nodes_to_exclude: list[str],
    scales: dict[str, float],
    data: str,
    crops: dict[str, dict[int, int]] | None = None,
) -> dict[str, Any]:
    """The quantize stage's two explicit-quantization graphs: `int8_qdq` (FP32 elsewhere) and `int8` (FP16 elsewhere).

    The FP16 one is the FP32 one through the same AutoCast conversion as every FP16 graph of a GPU target
    (build/precision.py: normalisation and measured-overflow nodes stay FP32, weights converted as written),
    measured on the first captured call, cropped as for the tools.
    """
    from t2vtrt.build import precision
    from t2vtrt.calibration.reader import tool_feeds

    summary = write_qdq_graph(source, int8_qdq, data, crops, nodes_to_exclude, scales)
    # Inside the graph's folder: ONNX Runtime reads external data only below it.
    with tempfile.TemporaryDirectory(prefix=".fp16.", dir=Path(int8_qdq).parent) as work:
        model, fill = precision.convert(Path(int8_qdq), "fp16", tool_feeds(data, 1, crops), Path(work))
        precision.save_graph(model, Path(int8), fill)  # inside the block: weights may be read from `work`
    return summary
