"""What an ONNX graph costs on a GPU, from the graph alone (no GPU, no TensorRT): the build plan's inputs.

- weights: every initializer, at fp32, fp16 and int8 (the Q/DQ graph's real sizes when it exists);
- activations: the peak of live intermediate tensors in topological order at the profile's max
  shape (shapes from symbolic shape inference) - the estimate of an engine's context memory;
  attention score tensors are left out for fp16/int8 graphs because TensorRT fuses
  MatMul-Softmax-MatMul into one kernel there; tensors made from weights alone (a weight's
  Q/DQ, casts, transposes) are folded into the engine's weights at build time, and in an int8
  graph every DequantizeLinear is fused into the layer that reads it, which reads the int8 tensor;
- I/O buffers the runtime allocates at the given shapes.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from t2vtrt.runtime.errors import T2VError

# ONNX TensorProto data type -> bytes per element (4-bit types count half a byte).
DTYPE_BYTES = {
    1: 4,
    2: 1,
    3: 1,
    4: 2,
    5: 2,
    6: 4,
    7: 8,
    9: 1,
    10: 2,
    11: 8,
    12: 4,
    13: 8,
    16: 2,
    17: 1,
    18: 1,
    19: 1,
    20: 1,
    21: 0.5,
    22: 0.5,
    23: 0.5,
}
FLOAT_TYPES = {1: "fp32", 10: "fp16", 11: "fp64", 16: "bf16"}
WEIGHT_OPS = {"Conv": (1,), "ConvTranspose": (1,), "MatMul": (0, 1), "Gemm": (0, 1)}
ALIAS_OPS = {"Identity", "Transpose", "Cast"}  # a weight passed through these is still that weight
QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}
SCORE_PATH_OPS = {"Mul", "Div", "Add", "Sub", "Cast", "Where", "QuantizeLinear", "DequantizeLinear"}  # QK MatMul .. Softmax
PROB_PATH_OPS = {"Cast", "QuantizeLinear", "DequantizeLinear"}  # between Softmax and the P.V MatMul (AutoCast, Q/DQ)


@dataclass(frozen=True)
class GraphStats:
    """What one ONNX graph costs on a GPU at one input shape."""

    weights: dict[str, int]  # bytes: as built ("engine") and at fp32 / fp16 / int8
    activation_bytes: int  # peak live intermediates: the engine's context memory
    io_bytes: int  # graph inputs + outputs at these shapes
    fused_attention_bytes: int  # attention scores TensorRT does not materialise (not counted)
    unknown_shapes: int  # intermediates whose shape inference failed (estimated from inputs)
    precision: str  # fp32 | fp16 | bf16 | int8 as the graph says
    guessed: tuple[str, ...] = ()  # the first few tensors whose size was guessed


def graph_without_weights(path: Path) -> Any:
    """The ONNX model for analysis: weights left unread (sizes come from dims), small external tensors read.

    Exporters put every initializer of a > 2 GB graph in external data, Reshape targets and other shape
    constants included; shape inference needs their values, so those (a few KiB) are read. A missing weights
    file is not an error here: the stage that copies the weights names it.
    """
    from t2vtrt.build.graphfiles import load_graph

    return load_graph(path, missing_ok=True)


def _numel(dims: Any) -> int:
    """Elements of a tensor with these dims."""
    count = 1
    for d in dims:
        count *= int(d)
    return count


def _weights(model: Any) -> dict[str, tuple[int, int]]:
    """Initializers and Constant tensors: name -> (elements, ONNX dtype)."""
    tensors = {t.name: (_numel(t.dims), t.data_type) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and attr.t is not None:
                    tensors[node.output[0]] = (_numel(attr.t.dims), attr.t.data_type)
    return tensors


def _aliases(model: Any, weights: dict[str, Any]) -> dict[str, str]:
    """Tensor -> the weight it is (through Identity/Transpose/Cast chains, as torch exports shared weights)."""
    alias = {name: name for name in weights}
    for node in model.graph.node:
        if node.op_type in ALIAS_OPS and node.input and node.input[0] in alias:
            alias[node.output[0]] = alias[node.input[0]]
    return alias


def weight_bytes(model: Any) -> dict[str, int]:
    """Weight bytes as built and at each precision: int8 counts GEMM/conv weights at 1 byte, the rest at fp16."""
    weights = _weights(model)
    alias = _aliases(model, weights)
    quantizable, quantized = set(), set()
    for node in model.graph.node:
        for index in WEIGHT_OPS.get(node.op_type, ()):
            if index < len(node.input) and node.input[index] in alias:
                quantizable.add(alias[node.input[index]])
        if node.op_type in QDQ_OPS and node.input and node.input[0] in alias:
            quantized.add(alias[node.input[0]])
    out = {"engine": 0, "fp32": 0, "fp16": 0, "int8": 0}
    for name, (count, dtype) in weights.items():
        size = DTYPE_BYTES.get(dtype, 4)
        floating = dtype in FLOAT_TYPES
        # TensorRT stores a weight that feeds QuantizeLinear as int8 in the engine.
        out["engine"] += int(count * (1 if name in quantized and floating else size))
        out["fp32"] += int(count * (4 if floating else size))
        out["fp16"] += int(count * (2 if floating else size))
        out["int8"] += int(count * (1 if (name in quantizable or name in quantized) and floating else 2 if floating else size))
    return out


def graph_precision(model: Any) -> str:
    """int8 when the graph has Q/DQ nodes, else the dtype holding most float weight bytes."""
    if any(node.op_type in QDQ_OPS for node in model.graph.node):
        return "int8"
    totals: dict[str, int] = {}
    for count, dtype in _weights(model).values():
        if dtype in FLOAT_TYPES:
            totals[FLOAT_TYPES[dtype]] = totals.get(FLOAT_TYPES[dtype], 0) + count
    best = max(totals, key=totals.get) if totals else "fp32"  # type: ignore[arg-type]
    return "fp32" if best == "fp64" else best


def _with_input_shapes(model: Any, shapes: dict[str, tuple[int, ...]]) -> Any:
    """A copy whose graph inputs have these concrete shapes."""
    import onnx

    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    # Shapes recorded at export are symbolic; inference must recompute them from the concrete inputs.
    del fixed.graph.value_info[:]
    for value in fixed.graph.input:
        if value.name in shapes:
            for dim, size in zip(value.type.tensor_type.shape.dim, shapes[value.name]):
                dim.ClearField("dim_param")
                dim.dim_value = int(size)
    return fixed


def _infer(model: Any) -> Any:
    """Shape-inferred model: ONNX Runtime's symbolic inference (resolves reshapes), else onnx's.

    Shape arithmetic is folded to constants first (see fold_shape_values): dynamo graphs compute RoPE grids
    and reshape targets from Shape nodes, which symbolic inference asserts on (Expand) and onnx's leaves unknown.
    """
    import onnx

    model = fold_shape_values(model)
    for prepare in (lambda m: m, _flat_gathers):
        try:
            from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

            return SymbolicShapeInference.infer_shapes(prepare(model), auto_merge=True)
        except Exception:  # noqa: BLE001, S112 - try the next way; onnx's own inference is the last resort
            continue
    return onnx.shape_inference.infer_shapes(model, data_prop=True)


# Ops evaluated on small known values when folding shape arithmetic (what exporters build shapes from).
SHAPE_OPS = {
    "Shape",
    "Gather",
    "Slice",
    "Concat",
    "Unsqueeze",
    "Squeeze",
    "Cast",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Range",
    "Reshape",
    "Equal",
    "Where",
    "Max",
    "Min",
    "Neg",
    "Abs",
    "ReduceProd",
    "ConstantOfShape",
    "Expand",
    "Identity",
    "Floor",
    "Ceil",
    "Sqrt",
    "Mod",
    "Less",
    "Greater",
    "Not",
    "And",
    "Or",
    "Tile",
    "Size",
}
SMALL_VALUE = 1 << 16  # elements: shape vectors and index grids, never activations


def fold_shape_values(model: Any, rounds: int = 8) -> Any:
    """A copy whose shape arithmetic (Shape -> Gather/Slice/Concat/...) is replaced by constants, given concrete input shapes.

    Each round runs onnx shape inference, evaluates every node whose inputs are known small values (a Shape
    node: its input's inferred shape) and turns it into a Constant; the next round then knows more shapes.
    """
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    for _ in range(rounds):
        if not _fold_round(out, _static_shapes(onnx.shape_inference.infer_shapes(out, data_prop=True))):
            break
    return out


def _static_shapes(model: Any) -> dict[str, tuple[int, ...]]:
    """Tensor name -> its fully known shape, from an inferred model."""
    graph = model.graph
    out = {}
    for value in (*graph.input, *graph.value_info, *graph.output):
        tensor = value.type.tensor_type
        if tensor.HasField("shape") and all(d.HasField("dim_value") for d in tensor.shape.dim):
            out[value.name] = tuple(int(d.dim_value) for d in tensor.shape.dim)
    for init in graph.initializer:
        out[init.name] = tuple(int(d) for d in init.dims)
    return out


def _known_values(model: Any) -> dict[str, Any]:
    """Small tensors whose values are in the graph: inline initializers and Constant nodes."""
    from onnx import numpy_helper

    values = {}
    for init in model.graph.initializer:
        if init.data_location != 1 and _numel(init.dims) <= SMALL_VALUE:  # 1: EXTERNAL, left unread
            values[init.name] = numpy_helper.to_array(init)
    for node in model.graph.node:
        if node.op_type == "Constant":
            value = next((a for a in node.attribute if a.name == "value"), None)
            if value is not None and _numel(value.t.dims) <= SMALL_VALUE:
                values[node.output[0]] = numpy_helper.to_array(value.t)
    return values


def _fold_round(model: Any, shapes: dict[str, tuple[int, ...]]) -> int:
    """Replace every foldable node by a Constant in place; how many were folded."""
    import numpy as np
    from onnx import helper, numpy_helper

    values = _known_values(model)
    folded = 0
    for index, node in enumerate(model.graph.node):
        if node.op_type == "Constant" or node.op_type not in SHAPE_OPS or len(node.output) != 1:
            continue
        if node.op_type == "Shape":
            if node.input[0] not in shapes:
                continue
            result = _shape_of(node, shapes[node.input[0]])
        else:
            if not all(name in values for name in node.input if name):
                continue
            result = _evaluate(model, node, values)
            if result is None or result.size > SMALL_VALUE:
                continue
        values[node.output[0]] = result
        constant = helper.make_node(
            "Constant", [], [node.output[0]], name=node.name, value=numpy_helper.from_array(np.asarray(result), node.output[0])
        )
        model.graph.node[index].CopyFrom(constant)
        folded += 1
    return folded


def _shape_of(node: Any, shape: tuple[int, ...]) -> Any:
    """A Shape node's value (its start/end attributes applied)."""
    import numpy as np

    attrs = {a.name: a.i for a in node.attribute}
    return np.array(shape[attrs.get("start", 0) : attrs.get("end", len(shape)) or None], dtype=np.int64)


def _evaluate(model: Any, node: Any, values: dict[str, Any]) -> Any:
    """One node run by onnx's reference evaluator on known inputs; None when it cannot."""
    import numpy as np
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    inputs = [name for name in node.input if name]
    graph = helper.make_graph(
        [node],
        "fold",
        [],
        [helper.make_empty_tensor_value_info(node.output[0])],
        [numpy_helper.from_array(np.asarray(values[name]), name) for name in dict.fromkeys(inputs)],
    )
    try:
        single = helper.make_model(graph, opset_imports=model.opset_import, ir_version=model.ir_version)
        return np.asarray(ReferenceEvaluator(single).run(None, {})[0])
    except Exception:  # noqa: BLE001 - an op the evaluator cannot run here stays unfolded; inference handles it
        return None


def _flat_gathers(model: Any) -> Any:
    """A copy where Gather(1-D data, constant N-D indices) is Gather(flat indices) + Reshape.

    Same shapes; ONNX Runtime's symbolic inference fails on the original form, which the
    OneHot->Gather surgery pass writes.
    """
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    ranks = {
        v.name: len(v.type.tensor_type.shape.dim)
        for v in onnx.shape_inference.infer_shapes(model).graph.value_info
        if v.type.tensor_type.HasField("shape")
    }
    inits = {t.name: t for t in model.graph.initializer}
    out = onnx.ModelProto()
    out.CopyFrom(model)
    nodes = []
    for node in out.graph.node:
        index = inits.get(node.input[1]) if node.op_type == "Gather" else None
        if index is None or len(index.dims) < 2 or ranks.get(node.input[0]) != 1:
            nodes.append(node)
            continue
        values = numpy_helper.to_array(index)
        flat, shape = f"{node.output[0]}__flat_index", f"{node.output[0]}__index_shape"
        out.graph.initializer.extend(
            [numpy_helper.from_array(values.reshape(-1), flat), numpy_helper.from_array(np.array(values.shape, np.int64), shape)]
        )
        nodes += [
            helper.make_node("Gather", [node.input[0], flat], [f"{node.output[0]}__flat"], axis=0),
            helper.make_node("Reshape", [f"{node.output[0]}__flat", shape], [node.output[0]]),
        ]
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out


def tensor_sizes(model: Any, shapes: dict[str, tuple[int, ...]]) -> dict[str, int | None]:
    """Bytes of every graph input, output and intermediate at these input shapes (None: unknown)."""
    inferred = _infer(_with_input_shapes(model, shapes))
    sizes: dict[str, int | None] = {}
    graph = inferred.graph
    for value in (*graph.input, *graph.value_info, *graph.output):
        tensor = value.type.tensor_type
        dims = tensor.shape.dim if tensor.HasField("shape") else None
        known = dims is not None and all(d.HasField("dim_value") for d in dims)
        sizes[value.name] = int(_numel(d.dim_value for d in dims) * DTYPE_BYTES.get(tensor.elem_type, 4)) if known else None
    return sizes


def attention_scores(model: Any) -> set[str]:
    """Tensors between a Q.K^T MatMul, its Softmax, and the P.V MatMul (through casts and Q/DQ): what MHA fusion never writes."""
    producer = {out: node for node in model.graph.node for out in node.output}
    consumers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    scores: set[str] = set()
    for node in model.graph.node:
        if node.op_type != "Softmax":
            continue
        path, tensor = [], node.input[0]
        while tensor in producer and producer[tensor].op_type in SCORE_PATH_OPS:
            path.append(tensor)
            tensor = producer[tensor].input[0]
        probs = _probability_path(node.output[0], consumers)
        if tensor in producer and producer[tensor].op_type == "MatMul" and probs:
            scores.update([tensor, *path, *probs])
    return scores


def _probability_path(softmax_out: str, consumers: dict[str, list[Any]]) -> list[str]:
    """The Softmax output and the casts / Q-DQ after it when they end in a MatMul; [] otherwise."""
    path, tensor = [softmax_out], softmax_out
    while True:
        users = consumers.get(tensor, [])
        if users and all(u.op_type == "MatMul" for u in users):
            return path
        if len(users) != 1 or users[0].op_type not in PROB_PATH_OPS:
            return []
        tensor = users[0].output[0]
        path.append(tensor)


def folded_tensors(model: Any) -> set[str]:
    """Tensors computed from weights alone (a weight's Q/DQ, Cast, Transpose): TensorRT folds them into its weights."""
    known = set(_weights(model))
    folded: set[str] = set()
    for node in model.graph.node:  # topological order: one pass sees every chain
        inputs = [name for name in node.input if name]
        if node.op_type != "Constant" and inputs and all(name in known for name in inputs):
            outputs = [name for name in node.output if name]
            known.update(outputs)
            folded.update(outputs)
    return folded


def not_materialised(model: Any, precision: str) -> set[str]:
    """Tensors an engine never writes: folded ones, and in an int8 graph every DequantizeLinear output (fused into its reader)."""
    dequantized = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"} if precision == "int8" else set()
    return folded_tensors(model) | dequantized


def activation_peak(model: Any, sizes: dict[str, int | None], skip: set[str]) -> tuple[int, int]:
    """(peak bytes of live intermediates in node order, count of unknown sizes estimated)."""
    steps, unknown = live_timeline(model, sizes, skip)
    return max((live for _, live in steps), default=0), unknown


def live_timeline(model: Any, sizes: dict[str, int | None], skip: set[str]) -> tuple[list[tuple[str, int]], int]:
    """Per node in order, (op type, bytes of intermediates live after it runs); and the count of unknown sizes estimated."""
    graph = model.graph
    outside = {v.name for v in (*graph.input, *graph.output)} | {t.name for t in graph.initializer}
    last_use: dict[str, int] = {}
    for index, node in enumerate(graph.node):
        for name in node.input:
            last_use[name] = index
    live: dict[str, int] = {}
    steps: list[tuple[str, int]] = []
    unknown = 0
    for index, node in enumerate(graph.node):
        if node.op_type == "Constant":
            continue  # constants are weights, counted there
        for name in node.output:
            if not name or name in outside or name in skip:
                continue
            size = sizes.get(name)
            if size is None:  # unknown shape: as large as the node's largest known input
                unknown += 1
                size = max((sizes.get(i) or 0 for i in node.input), default=0)
            live[name] = size
        steps.append((node.op_type, sum(live.values())))
        for name in [n for n in live if last_use.get(n, -1) <= index]:
            del live[name]
    return steps, unknown


# Elementwise ops TensorRT fuses into one pointwise kernel when they chain (tanh-GELU's 8 ops, RMS norm's scale).
POINTWISE_OPS = {
    "Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Reciprocal", "Neg", "Abs", "Exp", "Log", "Tanh", "Erf", "Sigmoid",
    "Relu", "Softplus", "Clip", "Min", "Max", "Where", "Cast",
}  # fmt: skip


def pointwise_internal(model: Any) -> set[str]:
    """Tensors a pointwise op writes that only pointwise ops read: inside a fused chain, never materialised."""
    consumers: dict[str, list[str]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node.op_type)
    outputs = {v.name for v in model.graph.output}
    internal = set()
    for node in model.graph.node:
        if node.op_type not in POINTWISE_OPS:
            continue
        for name in node.output:
            users = consumers.get(name, [])
            if name not in outputs and users and all(op in POINTWISE_OPS for op in users):
                internal.add(name)
    return internal


@dataclass(frozen=True)
class Timeline:
    """A graph's live-intermediate bytes after each node at one input shape (every tensor; pointwise chains fused),
    with its I/O and fused-attention bytes."""

    steps: list[tuple[str, int]]
    fused_steps: list[tuple[str, int]]
    io_bytes: int
    fused: int
    unknown: int


def graph_timeline(path: Path, shapes: dict[str, tuple[int, ...]], skip_attention: bool) -> Timeline:
    """The live-bytes timelines of a graph at these input shapes (attention scores left out when TensorRT fuses them)."""
    model = graph_without_weights(path)
    sizes = tensor_sizes(model, shapes)
    scores = attention_scores(model) if skip_attention else set()
    skip = scores | not_materialised(model, graph_precision(model))
    steps, unknown = live_timeline(model, sizes, skip)
    fused_steps, _ = live_timeline(model, sizes, skip | pointwise_internal(model))
    io = sum(sizes.get(v.name) or 0 for v in (*model.graph.input, *model.graph.output))
    return Timeline(steps, fused_steps, io, sum(sizes.get(s) or 0 for s in scores), unknown)


@lru_cache(maxsize=64)
def _analyze_cached(path: str, stamp: tuple[int, int], shapes: tuple[tuple[str, tuple[int, ...]], ...]) -> GraphStats:
    """analyze_graph, cached per file version and shape (the plan is computed often in one process)."""
    model = graph_without_weights(Path(path))
    precision = graph_precision(model)
    sizes = tensor_sizes(model, dict(shapes))
    scores = attention_scores(model) if precision != "fp32" else set()
    peak, unknown = activation_peak(model, sizes, scores | not_materialised(model, precision))
    io = sum(sizes.get(v.name) or 0 for v in (*model.graph.input, *model.graph.output))
    produced = [out for node in model.graph.node if node.op_type != "Constant" for out in node.output if out]
    guessed = tuple(name for name in produced if sizes.get(name) is None)[:5]
    return GraphStats(weight_bytes(model), peak, io, sum(sizes.get(s) or 0 for s in scores), unknown, precision, guessed)


def analyze_graph(path: Path, shapes: dict[str, tuple[int, ...]]) -> GraphStats:
    """Weights, activations and I/O of a graph at these input shapes."""
    stat = path.stat() if path.is_file() else None
    if stat is None:
        raise T2VError(f"{path} is missing: run `t2vtrt surgery` (or `make engines`) first")
    key = tuple(sorted((k, tuple(int(x) for x in v)) for k, v in shapes.items()))
    return _analyze_cached(str(path), (stat.st_mtime_ns, stat.st_size), key)
