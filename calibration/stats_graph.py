"""Activation statistics computed inside the graph: one forward pass gives every tensor's min/max or |x| histogram.

Why: returning activations to Python holds every requested tensor of a run at once (the bench build peaked at
21.65 GB with 300 per run), and bounding that splits the tensors over runs that each recompute the whole graph.
Reductions appended to the graph return a few numbers per tensor instead, and ONNX Runtime frees each activation
once its last consumer (now also a reduction) has run: one run per sample covers every tensor at the memory of
plain inference plus the largest tensor's index buffer.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from t2vtrt.runtime.errors import T2VError

SCATTER_ADD_OPSET = 16  # ScatterElements(reduction="add"), what the in-graph histogram counts with


def _copy(model: Any) -> Any:
    """A copy of the model proto (weights loaded by build/graphfiles stay file references: the copy is small)."""
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def _opset(model: Any) -> int:
    """The model's default-domain opset."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def minmax_graph(model: Any, tensors: list[str]) -> tuple[Any, dict[str, tuple[str, str, str]]]:
    """A copy of `model` that also outputs each tensor's min, max and element count: (graph, tensor -> their outputs)."""
    import onnx
    from onnx import helper

    out = _copy(model)
    outputs: dict[str, tuple[str, str, str]] = {}
    added: dict[str, list[Any]] = {}
    kinds = (("ReduceMin", onnx.TensorProto.FLOAT), ("ReduceMax", onnx.TensorProto.FLOAT), ("Size", onnx.TensorProto.INT64))
    for index, name in enumerate(tensors):
        names = (f"t2vtrt_stat{index}_min", f"t2vtrt_stat{index}_max", f"t2vtrt_stat{index}_size")
        # No axes: every axis is reduced (as attribute before opset 18, as input from 18 on).
        added[name] = [helper.make_node(op, [name], [r], name=r, **({} if op == "Size" else {"keepdims": 0})) for (op, _), r in zip(kinds, names)]
        out.graph.output.extend(helper.make_tensor_value_info(r, dtype, []) for (_, dtype), r in zip(kinds, names))
        outputs[name] = names
    _place_after_producers(out, added)
    return out, outputs


def sample_stride(count: int, limit: int | None) -> int:
    """The stride that keeps at most about `limit` of `count` values: 1, or the smallest prime >= count / limit.

    A prime stride walks through every channel of a flattened tensor (a stride sharing a factor with an inner
    dimension would skip some channels for good, and channel outliers are what the ranges must see).
    """
    if limit is None or count <= limit:
        return 1
    stride = -(-count // limit)
    while any(stride % d == 0 for d in range(2, int(stride**0.5) + 1)):
        stride += 1
    return stride


def histogram_graph(model: Any, absmax: dict[str, float], num_bins: int, strides: dict[str, int] | None = None) -> tuple[Any, dict[str, str]]:
    """A copy of `model` that also outputs, per tensor, the counts of |x| in num_bins equal bins over [0, absmax].

    The same binning as calibration/ranges.py's abs_histogram: |x| * float32(num_bins / absmax), truncated, the
    last bin also taking absmax itself. Counts are int32 per run (a tensor holds fewer than 2**31 values). A
    tensor with a stride > 1 in `strides` is counted on every stride-th value of its flattened form (the
    counting costs per value; min and max always see them all).
    """
    import onnx
    from onnx import helper, numpy_helper

    if _opset(model) < SCATTER_ADD_OPSET:
        raise T2VError(
            f"in-graph histograms need opset >= {SCATTER_ADD_OPSET} (ScatterElements add); the graph has opset "
            f"{_opset(model)}: export with a newer opset"
        )
    out = _copy(model)
    graph = out.graph
    prefix = "t2vtrt_hist"
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.zeros(num_bins, np.int32), f"{prefix}_zeros"),
            numpy_helper.from_array(np.array(num_bins - 1, np.int32), f"{prefix}_last"),
            numpy_helper.from_array(np.array(0, np.int32), f"{prefix}_zero"),
            numpy_helper.from_array(np.array([-1], np.int64), f"{prefix}_flat"),
            numpy_helper.from_array(np.array([0], np.int64), f"{prefix}_zero64"),
            numpy_helper.from_array(np.array([np.iinfo(np.int64).max], np.int64), f"{prefix}_end"),
        ]
    )
    outputs: dict[str, str] = {}
    added: dict[str, list[Any]] = {}
    for index, (name, top) in enumerate(absmax.items()):
        p = f"{prefix}{index}"
        graph.initializer.append(numpy_helper.from_array(np.array(num_bins / top, np.float32), f"{p}_scale"))
        stride = (strides or {}).get(name, 1)
        sampled = [
            helper.make_node("Reshape", [name, f"{prefix}_flat"], [f"{p}_all"], name=f"{p}_all"),
            helper.make_node(
                "Slice", [f"{p}_all", f"{prefix}_zero64", f"{prefix}_end", f"{prefix}_zero64", f"{p}_step"], [f"{p}_sampled"], name=f"{p}_sampled"
            ),
        ]
        if stride > 1:
            graph.initializer.append(numpy_helper.from_array(np.array([stride], np.int64), f"{p}_step"))
        added[name] = (sampled if stride > 1 else []) + [
            helper.make_node("Abs", [f"{p}_sampled" if stride > 1 else name], [f"{p}_abs"], name=f"{p}_abs"),
            helper.make_node("Mul", [f"{p}_abs", f"{p}_scale"], [f"{p}_scaled"], name=f"{p}_mul"),
            helper.make_node("Cast", [f"{p}_scaled"], [f"{p}_bin"], name=f"{p}_cast", to=onnx.TensorProto.INT32),
            helper.make_node("Min", [f"{p}_bin", f"{prefix}_last"], [f"{p}_clip"], name=f"{p}_min"),
            helper.make_node("Reshape", [f"{p}_clip", f"{prefix}_flat"], [f"{p}_idx"], name=f"{p}_reshape"),
            # Ones computed from the indices, not ConstantOfShape(Shape): at static shapes ONNX Runtime folds that
            # into a tensor-sized constant per tensor, all held for the session's life.
            helper.make_node("GreaterOrEqual", [f"{p}_idx", f"{prefix}_zero"], [f"{p}_true"], name=f"{p}_true"),
            helper.make_node("Cast", [f"{p}_true"], [f"{p}_ones"], name=f"{p}_ones", to=onnx.TensorProto.INT32),
            helper.make_node(
                "ScatterElements", [f"{prefix}_zeros", f"{p}_idx", f"{p}_ones"], [f"{p}_counts"], name=f"{p}_counts", axis=0, reduction="add"
            ),
        ]
        graph.output.append(helper.make_tensor_value_info(f"{p}_counts", onnx.TensorProto.INT32, [num_bins]))
        outputs[name] = f"{p}_counts"
    _place_after_producers(out, added)
    return out, outputs


def _place_after_producers(model: Any, added: dict[str, list[Any]]) -> None:
    """Insert each tensor's statistics nodes right after the node that writes it (graph inputs' first).

    ONNX Runtime runs ready nodes in node order (calibration/ranges.py asks for the priority-based order): statistics
    placed at the end would run last and keep every activation alive until then (a real-size run reached 23 GB).
    """
    nodes = list(model.graph.node)
    first = [n for name in added if name not in {o for node in nodes for o in node.output} for n in added[name]]
    placed = list(first)
    for node in nodes:
        placed.append(node)
        for name in node.output:
            placed += added.get(name, [])
    del model.graph.node[:]
    model.graph.node.extend(placed)
