"""INT8 Q/DQ graphs from NVIDIA ModelOpt's ONNX PTQ, with our entropy scales imported as a calibration cache.

ModelOpt 0.47 places the Q/DQ nodes (TensorRT-friendly patterns, per-channel weights, symmetric
activations) and converts everything else to FP16. Its own "entropy" calibration is onnxruntime's
EntropyCalibrater with 128 histogram bins for 128 levels, which degenerates towards max calibration, and
its bins cannot be configured through its API; so our scales (entropy.py, 2048 bins) go in through the
supported calibration_cache_path, which overwrites every activation scale ModelOpt computed. Call these
through isolate.run_isolated: ModelOpt patches onnxruntime process-wide.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from t2vtrt.build.graphfiles import load_graph, needs_external_data, save_graph


def _linear_dead_cast_cleanup() -> None:
    """Replace ModelOpt 0.47's O(nodes^2) dead-node cleanup in FP16 conversion with an O(nodes) equivalent.

    PrecisionConverter._cleanup_no_consumer_nodes scans every node's consumers by a linear search over the
    whole graph: ~70% of a 50 s conversion on the tiny denoiser. The replacement removes the same nodes
    (those whose outputs nobody reads and which are not graph outputs), computed from one set of reads.
    """
    try:
        from modelopt.onnx.autocast.precisionconverter import PrecisionConverter
    except ImportError:
        return
    if not hasattr(PrecisionConverter, "_cleanup_no_consumer_nodes"):
        return

    def _cleanup_no_consumer_nodes(self: Any) -> None:
        read = {name for node in self.model.graph.node for name in node.input}
        read |= {o.name for o in self.model.graph.output}
        for node in [n for n in self.model.graph.node if not any(o in read for o in n.output)]:
            self.model.graph.node.remove(node)

    PrecisionConverter._cleanup_no_consumer_nodes = _cleanup_no_consumer_nodes


def exact_patterns(nodes: list[str]) -> list[str]:
    """ModelOpt treats nodes_to_exclude as regexes matched at the start: anchor and escape exact names."""
    return [f"^{re.escape(name)}$" for name in nodes]


def _copy_graph(source: Path, work: Path) -> Path:
    """Copy the graph (and its external data) into `work`: ModelOpt rewrites its input file in place."""
    target = work / "denoiser.onnx"
    shutil.copyfile(source, target)
    data = source.with_name(f"{source.name}.data")
    if data.is_file():
        shutil.copyfile(data, work / data.name)
    return target


def quantize_graph(
    source: str,
    output: str,
    data: str,
    samples: int,
    high_precision: str,
    nodes_to_exclude: list[str],
    cache: str | None = None,
    method: str = "entropy",
    crops: dict[str, dict[int, int]] | None = None,
) -> dict[str, Any]:
    """ModelOpt INT8 PTQ of `source` into `output` (atomic); FP16-fallback nodes never read a Q/DQ'd tensor."""
    import logging

    from modelopt.onnx.quantization import quantize

    from t2vtrt.calibration.qdq import unquantize_fallbacks
    from t2vtrt.calibration.reader import FeedReader, tool_feeds

    logging.getLogger().setLevel(logging.ERROR)
    _linear_dead_cast_cleanup()
    feeds = tool_feeds(data, samples, crops)
    with tempfile.TemporaryDirectory(prefix="t2vtrt-modelopt.") as tmp:
        work = Path(tmp)
        graph = _copy_graph(Path(source), work)
        out = work / "quantized.onnx"
        quantize(
            onnx_path=str(graph),
            quantize_mode="int8",
            calibration_method=method,
            calibration_data_reader=FeedReader(feeds),
            calibration_cache_path=cache,
            calibration_eps=["cpu"],
            high_precision_dtype=high_precision,
            nodes_to_exclude=exact_patterns(nodes_to_exclude),
            use_external_data_format=needs_external_data(Path(source)),
            output_path=str(out),
            log_level="WARNING",
        )
        # With shared Q/DQ pairs a quantized tensor can also reach an excluded reader; make it read the float tensor.
        model, rewired = unquantize_fallbacks(load_graph(out), set(nodes_to_exclude))
        save_graph(model, Path(output))  # inside the block: large weights are read from `work` as they are written
    return {"rewired_fallback_nodes": rewired}


def quantize_graphs(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Several quantize_graph calls in one child process (ModelOpt's import is paid once)."""
    return [quantize_graph(**job) for job in jobs]
