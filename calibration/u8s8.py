"""The cpu target's fast INT8: QDQ with uint8 activations and int8 weights (U8S8), as onnxruntime.quantization writes it.

ONNX Runtime's CPU kernels are fast for U8S8 Conv/MatMul/Gemm; signed symmetric activations (what
TensorRT wants) gain nothing there. Same captured data, same fallback plan, same ranges as the other INT8
graphs (the method's amax clipped to the observed min/max). The graph is the one onnxruntime's
`quantize_static` (QDQ format, per-channel, these ranges as TensorQuantOverrides) writes, computed with its
own quantization functions (quant_utils), but written here with the weights left on disk and quantized one at
a time as the file is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from t2vtrt.calibration.ranges import TensorRange
from t2vtrt.runtime.errors import T2VError

OP_TYPES = ["Conv", "MatMul", "Gemm"]
# Their outputs stay float: ONNX Runtime then runs DQ -> MatMul as MatMulIntegerToFloat (float out, no
# requantize) instead of QLinearMatMul + a DequantizeLinear pass over e.g. a (32,1024,512) GEGLU tensor.
# Bench denoiser call (random-scale profiling build): 1.85 -> 1.73 s, and one rounding fewer per linear
# layer. Conv keeps its quantized output: QLinearConv (4x the float Conv's speed here) needs one, and
# ONNX Runtime has no Conv-to-float kernel.
FLOAT_OUTPUT_OP_TYPES = ["MatMul", "Gemm"]


def u8s8_ranges(ranges: dict[str, TensorRange], method: str, cache_scales: dict[str, float] | None = None) -> dict[str, list[float]]:
    """[rmin, rmax] per tensor for uint8 activations; an imported cache's amax replaces ours where it names the tensor."""
    if cache_scales:
        ranges = {
            t: TensorRange(r.min, r.max, cache_scales[t] * 127.0, cache_scales[t] * 127.0) if t in cache_scales else r for t, r in ranges.items()
        }
        method = "entropy"
    return {t: list(r.asymmetric(method)) for t, r in ranges.items()}


def activation_matmuls(model: Any) -> list[str]:
    """MatMul nodes whose two inputs are both activations (attention's Q.K^T and P.V): no weight to quantize.

    Left in float on the cpu target: uint8 softmax probabilities (256 levels over [0, 1]) wrecked the trained
    shapes model (denoiser rel L2 0.17, worst video frame 12 dB), and the speed is in the weight GEMMs and
    convolutions, not in these batched products (which the cpu target runs as fused flash attention).
    """
    from t2vtrt.calibration.qdq import constant_tensors

    constants = constant_tensors(model)
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and not any(i in constants for i in n.input)]


def _activation_params(lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (zero point, scale) of the range [lo, hi], as onnxruntime's QDQ quantizer computes them."""
    from onnx import TensorProto
    from onnxruntime.quantization.quant_utils import compute_scale_zp, get_qmin_qmax_for_qType

    qmin, qmax = get_qmin_qmax_for_qType(TensorProto.UINT8, reduce_range=False, symmetric=False)
    zero, scale = compute_scale_zp(np.float32(lo), np.float32(hi), qmin, qmax, False, None)
    return np.asarray(zero, dtype=np.uint8), np.asarray(scale, dtype=np.float32)


def _weight_params(values: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel symmetric int8 (zero points, scales) along `axis`, as onnxruntime's QDQ quantizer computes them."""
    from onnx import TensorProto
    from onnxruntime.quantization.quant_utils import compute_data_quant_params

    params = [compute_data_quant_params(values.take(i, axis).ravel(), TensorProto.INT8, True, reduce_range=False) for i in range(values.shape[axis])]
    return np.asarray([z for z, _ in params], dtype=np.int8), np.asarray([s for _, s in params], dtype=np.float32)


def _fit_int32_bias(bias: np.ndarray, input_scale: np.ndarray, weight_scale: np.ndarray) -> np.ndarray:
    """Weight scales raised where input_scale * weight_scale would overflow an int32 bias (onnxruntime's rule)."""
    int32 = np.iinfo(np.int32)
    qrange = np.float64(int32.max) - np.float64(int32.min + 1)
    smallest = 1.0001 * (2.0 * np.abs(bias.astype(np.float64))) / qrange
    candidate = np.float64(input_scale) * weight_scale.astype(np.float64)
    low = (candidate < smallest) & (candidate > 0.0)
    adjusted = weight_scale.copy()
    adjusted[low] = (weight_scale.astype(np.float64)[low] * (smallest[low] / candidate[low])).astype(np.float32)
    return adjusted


def _int32_bias(bias: np.ndarray, input_scale: np.ndarray, weight_scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(int32 bias, its per-channel scale = input scale x weight scale), rounded and clipped as onnxruntime does."""
    scale = (input_scale * weight_scale).astype(np.float32)
    int32 = np.iinfo(np.int32)
    values = np.clip((bias.astype(np.float64) / scale.astype(np.float64)).round(), np.float64(int32.min), np.float64(int32.max))
    return values.astype(np.int32), scale


class _Plan(NamedTuple):
    """What the U8S8 graph quantizes: activations, weights (-> axis), biases per reader (-> (bias, weight, input)), nodes."""

    activations: list[str]
    weights: dict[str, int]
    biases: dict[str, tuple[str, str, str]]
    nodes: list[Any]


def _plan(model: Any, skip: set[str]) -> _Plan:
    """onnxruntime's QDQ choice for Conv/MatMul/Gemm: input 0, weight per channel, int32 bias, Conv outputs too."""
    from t2vtrt.calibration.placement import weight_axis

    inits = {t.name for t in model.graph.initializer}
    activations: dict[str, None] = {}
    weights: dict[str, int] = {}
    biases: dict[str, tuple[str, str, str]] = {}
    nodes = [n for n in model.graph.node if n.op_type in OP_TYPES and n.name not in skip]
    for node in nodes:
        activations[node.input[0]] = None
        if node.input[1] in inits:
            weights[node.input[1]] = weight_axis(node)
        else:
            activations[node.input[1]] = None
        if len(node.input) > 2 and node.input[2] in inits and node.input[1] in inits:
            # Per reader: a bias several layers share (the exporter merges equal constants) scales with each one's input.
            biases[node.name] = (node.input[2], node.input[1], node.input[0])
        if node.op_type not in FLOAT_OUTPUT_OP_TYPES:
            activations[node.output[0]] = None
    return _Plan(list(activations), weights, biases, nodes)


def write_u8s8_graph(source: str, output: str, ranges: dict[str, list[float]], nodes_to_exclude: list[str]) -> dict[str, Any]:
    """The U8S8 graph of `source` at `output` (atomic; weights quantized one at a time as the file is written).

    `ranges`: tensor -> [rmin, rmax]. The result is onnxruntime `quantize_static`'s QDQ graph for these settings
    (uint8 activations, per-channel int8 weights, int32 biases, Conv/MatMul/Gemm, Conv outputs quantized,
    MatMul/Gemm outputs float, FP16-fallback nodes reading float): tests/calibration/test_u8s8.py holds it to
    quantize_static's own graph. quantize_static itself holds several copies of the weights and runs its own
    calibration pass: past 15 GB on the 1.41B UNet3D.
    """
    from t2vtrt.build.graphfiles import load_graph, needs_external_data, save_graph
    from t2vtrt.calibration.placement import rewire

    model = load_graph(Path(source))
    float_matmuls = activation_matmuls(model)
    skip = set(nodes_to_exclude) | set(float_matmuls)
    plan = _plan(model, skip)
    uncovered = [t for t in plan.activations if t not in ranges]
    if uncovered:
        raise T2VError(f"the U8S8 graph quantizes {len(uncovered)} tensors calibration has no range for, e.g. {uncovered[0]}")
    inits = {t.name: t for t in model.graph.initializer}
    act, weight = _parameters(plan, ranges, inits)
    added = _Added(readers=_readers(model, plan, skip))
    added.activations(act)
    stand_ins = added.weights(weight, inits, plan)
    added.biases(plan, act, weight, inits)
    model.graph.initializer.extend(added.initializers)
    rewire(model, added.readers, added.dequantized, added.nodes)
    _drop_replaced(model, set(plan.weights) | {b for b, _, _ in plan.biases.values()})
    save_graph(model, Path(output), external=needs_external_data(Path(source)), fill=_quantized_weight_fill(stand_ins))
    return {"quantized_tensors": len(act), "quantized_weights": len(weight), "float_activation_matmuls": len(float_matmuls)}


Params = tuple[np.ndarray, np.ndarray]  # (zero point, scale)


def _parameters(plan: _Plan, ranges: dict[str, list[float]], inits: dict[str, Any]) -> tuple[dict[str, Params], dict[str, Params]]:
    """Zero points and scales of every quantized activation and weight (a weight's scale fitted to its int32 bias)."""
    from t2vtrt.build.graphfiles import read_array

    act = {t: _activation_params(*ranges[t]) for t in plan.activations}
    weight = {w: _weight_params(read_array(inits[w]), axis) for w, axis in plan.weights.items()}
    for b, w, x in plan.biases.values():
        weight[w] = (weight[w][0], _fit_int32_bias(read_array(inits[b]), act[x][1], weight[w][1]))
    return act, weight


@dataclass
class _Added:
    """What the U8S8 graph adds: per quantized tensor its new nodes, its dequantized name and readers; new initializers."""

    readers: dict[str, list[tuple[str, int]]]
    nodes: dict[str, list[Any]] = field(default_factory=dict)
    dequantized: dict[str, str] = field(default_factory=dict)
    initializers: list[Any] = field(default_factory=list)

    def activations(self, act: dict[str, Params]) -> None:
        """A uint8 Q/DQ pair per activation."""
        from onnx import numpy_helper

        from t2vtrt.calibration.placement import qdq_pair

        for t, (zero, scale) in act.items():
            self.initializers += [numpy_helper.from_array(scale, f"{t}_scale"), numpy_helper.from_array(zero, f"{t}_zero_point")]
            self.nodes[t] = qdq_pair(t, None)
            self.dequantized[t] = f"{t}_DequantizeLinear_Output"

    def weights(self, weight: dict[str, Params], inits: dict[str, Any], plan: _Plan) -> dict[str, tuple[Any, Any, Any, int]]:
        """A DequantizeLinear per weight, reading an int8 stand-in filled as the file is written; the stand-ins' sources."""
        from onnx import TensorProto, numpy_helper

        stand_ins = {}
        for w, (zero, scale) in weight.items():
            stand_in = TensorProto(name=f"{w}_quantized", dims=list(inits[w].dims), data_type=TensorProto.INT8)
            stand_ins[stand_in.name] = (inits[w], zero, scale, plan.weights[w])
            self.initializers += [stand_in, numpy_helper.from_array(scale, f"{w}_scale"), numpy_helper.from_array(zero, f"{w}_zero_point")]
            self.nodes[w] = [_dequantize(f"{w}_quantized", f"{w}_scale", f"{w}_zero_point", f"{w}_DequantizeLinear_Output", plan.weights[w])]
            self.dequantized[w] = f"{w}_DequantizeLinear_Output"
        return stand_ins

    def biases(self, plan: _Plan, act: dict[str, Params], weight: dict[str, Params], inits: dict[str, Any]) -> None:
        """An int32 bias (scale = input scale x weight scale) per quantized reader, read by that reader only."""
        from onnx import numpy_helper

        from t2vtrt.build.graphfiles import read_array

        for count, (node, (b, w, x)) in enumerate(plan.biases.items()):
            values, scale = _int32_bias(read_array(inits[b]), act[x][1], weight[w][1])
            q = f"{b}_quantized_{count}"
            self.initializers += [
                numpy_helper.from_array(values, q),
                numpy_helper.from_array(scale, f"{q}_scale"),
                numpy_helper.from_array(np.zeros(scale.shape, np.int32), f"{q}_zero_point"),
            ]
            self.nodes[q] = [_dequantize(q, f"{q}_scale", f"{q}_zero_point", f"{q}_dequantized", 0)]
            self.dequantized[q] = f"{q}_dequantized"
            self.readers[q] = [(node, 2)]


def _drop_replaced(model: Any, replaced: set[str]) -> None:
    """Remove the float weights and biases only their quantized copies are read in place of."""
    still_read = {i for n in model.graph.node for i in n.input}
    for init in [i for i in model.graph.initializer if i.name in replaced and i.name not in still_read]:
        model.graph.initializer.remove(init)


def _quantized_weight_fill(stand_ins: dict[str, tuple[Any, Any, Any, int]]) -> Any:
    """save_graph's fill: a stand-in int8 weight's bytes, its float weight read and quantized as it is written."""
    from onnx import TensorProto, numpy_helper
    from onnxruntime.quantization.quant_utils import quantize_onnx_initializer

    from t2vtrt.build.graphfiles import read_array

    def fill(tensor: Any) -> bytes | None:
        if tensor.name not in stand_ins or tensor.raw_data:
            return None
        source_weight, zero, scale, axis = stand_ins[tensor.name]
        return quantize_onnx_initializer(
            numpy_helper.from_array(read_array(source_weight), source_weight.name), TensorProto.INT8, zero, scale, axis
        ).raw_data

    return fill


def _dequantize(values: str, scale: str, zero: str, out: str, axis: int) -> Any:
    """A per-channel DequantizeLinear of a stored integer tensor."""
    from onnx import helper

    return helper.make_node("DequantizeLinear", [values, scale, zero], [out], name=f"{out}_node", axis=axis)


def _readers(model: Any, plan: _Plan, skip: set[str]) -> dict[str, list[tuple[str, int]]]:
    """Per quantized activation and weight, the inputs that read its dequantized copy: every reader but the float nodes."""
    quantized, activations = {*plan.activations, *plan.weights}, set(plan.activations)
    planned = {n.name for n in plan.nodes}
    readers: dict[str, list[tuple[str, int]]] = {t: [] for t in quantized}
    for node in model.graph.node:
        if node.name in skip:
            continue
        for index, name in enumerate(node.input):
            if name in quantized and (name in activations or node.name in planned):  # a weight: only its quantized readers
                readers[name].append((node.name, index))
    return readers
