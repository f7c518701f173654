"""In-graph statistics equal the same statistics computed in numpy from the tensors' values."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from t2vtrt.calibration.entropy import entropy_amax
from t2vtrt.calibration.graphs import session
from t2vtrt.calibration.mse import mse_amax
from t2vtrt.calibration.ranges import abs_histogram, collect_ranges
from t2vtrt.calibration.stats_graph import histogram_graph, minmax_graph, sample_stride
from t2vtrt.runtime.errors import T2VError


def _graph(opset: int = 17) -> onnx.ModelProto:
    """x -> MatMul(w) -> h -> Relu -> Conv-free MatMul(w2) -> y: two intermediates of different ranges."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((8, 16)).astype(np.float32), "w")
    w2 = numpy_helper.from_array(rng.standard_normal((16, 4)).astype(np.float32) * 3, "w2")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="mm1"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("MatMul", ["r", "w2"], ["y"], name="mm2"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
        [w, w2],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _values(model: onnx.ModelProto, names: list[str], feed: np.ndarray) -> dict[str, np.ndarray]:
    """The tensors' values, returned as extra graph outputs (the numpy oracle's input)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    out.graph.output.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names if n != "y")
    return dict(zip(names, session(out).run(names, {"x": feed})))


def test_in_graph_min_max_and_histograms_equal_numpy() -> None:
    """Every tensor's min, max and |x| histogram (same bins, same truncation) from one run of the augmented graph."""
    model, names, bins = _graph(), ["h", "r", "y"], 64
    feed = np.random.default_rng(1).standard_normal((300, 8)).astype(np.float32)
    expected = _values(model, names, feed)
    graph, stats = minmax_graph(model, names)
    outputs = [n for triple in stats.values() for n in triple]
    got = dict(zip(outputs, session(graph).run(outputs, {"x": feed})))
    for name, (low, high, size) in stats.items():
        assert got[low] == expected[name].min() and got[high] == expected[name].max() and got[size] == expected[name].size
    absmax = {n: float(np.abs(expected[n]).max()) for n in names}
    graph, counts = histogram_graph(model, absmax, bins)
    hists = dict(zip(counts, session(graph).run(list(counts.values()), {"x": feed})))
    for name in names:
        np.testing.assert_array_equal(hists[name], abs_histogram(expected[name], absmax[name], bins))
        assert hists[name].sum() == expected[name].size


def test_sampled_histograms_count_every_strideth_value() -> None:
    """A stride counts exactly the values a numpy slice with that stride holds; min and max still see every value."""
    model, bins = _graph(), 128
    feed = np.random.default_rng(2).standard_normal((1000, 8)).astype(np.float32)
    expected = _values(model, ["h"], feed)["h"]
    absmax = float(np.abs(expected).max())
    graph, counts = histogram_graph(model, {"h": absmax}, bins, {"h": 7})
    (hist,) = session(graph).run([counts["h"]], {"x": feed})
    np.testing.assert_array_equal(hist, abs_histogram(expected.ravel()[::7], absmax, bins))
    ranges = collect_ranges(model, ["h"], [{"x": feed}], num_bins=bins, levels=16, hist_values=1000)
    assert ranges["h"].max == expected.max()  # the sample's max may be lower: pass 1 is not sampled


@pytest.mark.parametrize("count, limit, stride", [(100, None, 1), (100, 100, 1), (101, 100, 2), (1000, 100, 11), (5_242_880, 65_536, 83)])
def test_sample_stride_is_one_or_a_prime(count: int, limit: int | None, stride: int) -> None:
    """Prime strides (no shared factor with a power-of-two channel count), keeping about `limit` values."""
    assert sample_stride(count, limit) == stride


def test_collect_ranges_over_several_runs_counts_every_value() -> None:
    """Ranges over batched runs (graph inputs handled in numpy) equal the ranges of all values at once."""
    model = _graph()
    feeds = [{"x": np.random.default_rng(i).standard_normal((5, 8)).astype(np.float32)} for i in range(4)]
    ranges = collect_ranges(model, ["x", "h", "y"], feeds, num_bins=256, levels=16, batch=2)
    whole = _values(model, ["x", "h", "y"], np.concatenate([f["x"] for f in feeds]))
    for name, values in whole.items():
        assert (ranges[name].min, ranges[name].max) == (values.min(), values.max())
        absmax = float(np.abs(values).max())
        hist = abs_histogram(values, absmax, 256)
        assert ranges[name].mse_amax == mse_amax(hist, absmax)
        assert ranges[name].entropy_amax == entropy_amax(hist, absmax, 16)


def test_histograms_need_scatter_add() -> None:
    """An opset without ScatterElements' reduction is refused in one line naming the fix."""
    with pytest.raises(T2VError, match="opset >= 16"):
        histogram_graph(_graph(opset=13), {"h": 1.0}, 8)


PEAK_SCRIPT = """
import resource, sys
import numpy as np
import onnx
from onnx import TensorProto, helper
from t2vtrt.calibration.graphs import session
from t2vtrt.calibration.stats_graph import histogram_graph, minmax_graph, sample_stride

# A chain of 24 elementwise layers over 64 MiB tensors: holding every activation would take 1.5 GiB.
layers = 24
nodes = [helper.make_node("Mul" if i % 2 else "Add", [f"t{i}", "k"], [f"t{i + 1}"], name=f"n{i}") for i in range(layers)]
graph = helper.make_graph(
    nodes, "chain", [helper.make_tensor_value_info("t0", TensorProto.FLOAT, [16, 1 << 20])],
    [helper.make_tensor_value_info(f"t{layers}", TensorProto.FLOAT, [16, 1 << 20])],
    [helper.make_tensor("k", TensorProto.FLOAT, [], [1.0001])],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
tensors = [f"t{i}" for i in range(1, layers + 1)]
which = sys.argv[1]
if which == "minmax":
    model, pairs = minmax_graph(model, tensors)
    names = [n for p in pairs.values() for n in p]
elif which == "hist":
    model, counts = histogram_graph(model, {t: 10.0 for t in tensors}, 2048)
    names = list(counts.values())
else:
    names = [f"t{layers}"]
x = np.random.default_rng(0).standard_normal((16, 1 << 20)).astype(np.float32)
session(model, node_order=True).run(names, {"t0": x})
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def test_statistics_hold_no_more_than_inference() -> None:
    """Each activation is freed after its statistics: peak RSS stays near the plain graph's, far below all tensors held."""
    import subprocess
    import sys

    peak = {
        w: int(subprocess.run([sys.executable, "-c", PEAK_SCRIPT, w], check=True, capture_output=True, text=True).stdout)
        for w in ("plain", "minmax", "hist")
    }
    held = 24 * (64 << 20)  # every activation alive at once
    assert peak["minmax"] < peak["plain"] + held / 4, peak
    # The histogram's |x|, bin indices and ones are a few tensor-sized buffers of the tensor at hand, freed as it goes.
    assert peak["hist"] < peak["plain"] + held / 4, peak
