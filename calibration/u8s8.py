"""The cpu target's fast INT8: onnxruntime.quantization QDQ with uint8 activations and int8 weights (U8S8).

ONNX Runtime's CPU kernels are fast for U8S8 Conv/MatMul/Gemm; signed symmetric activations (what
TensorRT wants) gain nothing there. Same captured data, same fallback plan, same entropy calibration:
onnxruntime's quantize_static cannot set its entropy histogram's bin counts, so our ranges (entropy amax
clipped to the observed min/max) go in as TensorQuantOverrides, which replace its own MinMax ranges.
Call through isolate.run_isolated (a process ModelOpt has not patched).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

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


def quantize_u8s8(
    source: str,
    output: str,
    data: str,
    samples: int,
    ranges: dict[str, list[float]],
    nodes_to_exclude: list[str],
    crops: dict[str, dict[int, int]] | None = None,
) -> dict[str, Any]:
    """Quantize `source` into `output` (atomic); `ranges` maps tensor -> [rmin, rmax]."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from t2vtrt.build.graphfiles import load_graph, needs_external_data, save_graph
    from t2vtrt.calibration.qdq import activation_quantizers, unquantize_fallbacks
    from t2vtrt.calibration.reader import FeedReader, tool_feeds

    logging.getLogger().setLevel(logging.ERROR)
    feeds = tool_feeds(data, samples, crops)
    float_matmuls = activation_matmuls(load_graph(Path(source)))
    overrides = {t: [{"rmin": np.float32(lo), "rmax": np.float32(hi)}] for t, (lo, hi) in ranges.items()}
    with tempfile.TemporaryDirectory(prefix="t2vtrt-u8s8.") as tmp:
        out = Path(tmp) / "u8s8.onnx"
        quantize_static(
            model_input=source,
            model_output=str(out),
            calibration_data_reader=FeedReader(feeds),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=OP_TYPES,
            per_channel=True,
            reduce_range=False,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=sorted(set(nodes_to_exclude) | set(float_matmuls)),
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={
                "TensorQuantOverrides": overrides,
                "ActivationSymmetric": False,
                "WeightSymmetric": True,
                "OpTypesToExcludeOutputQuantization": FLOAT_OUTPUT_OP_TYPES,
            },
            use_external_data_format=needs_external_data(Path(source)),
        )
        model = load_graph(out)
        uncovered = sorted(set(activation_quantizers(model)) - set(ranges))
        if uncovered:
            raise T2VError(f"the U8S8 graph quantizes {len(uncovered)} tensors calibration has no range for, e.g. {uncovered[0]}")
        # Output quantization shares Q/DQ pairs with every reader of a tensor, fallback nodes included.
        model, rewired = unquantize_fallbacks(model, set(nodes_to_exclude) | set(float_matmuls))
        quantized = len(activation_quantizers(model))
        save_graph(model, Path(output))  # inside the block: large weights are read from `tmp` as they are written
    return {"quantized_tensors": quantized, "rewired_fallback_nodes": rewired, "float_activation_matmuls": len(float_matmuls)}
