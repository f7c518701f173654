"""fold_casts."""

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest

from t2vtrt.build.surgery.casts import fold_casts, lossless

T = onnx.TensorProto


def _cast(src: gs.Tensor, to: int, name: str, dtype) -> tuple[gs.Node, gs.Variable]:
    out = gs.Variable(name, dtype=dtype, shape=src.shape)
    return gs.Node("Cast", attrs={"to": to}, inputs=[src], outputs=[out]), out


@pytest.mark.parametrize(
    "src, dst, expected",
    [
        (np.float16, np.float32, True),
        (np.float32, np.float64, True),
        (np.float32, np.float16, False),
        (np.int32, np.int64, True),
        (np.int64, np.int32, False),
        (np.uint8, np.int16, True),
        (np.int8, np.uint8, False),
        (np.int32, np.float64, True),
        (np.int32, np.float32, False),
        (np.int16, np.float32, True),
        (np.int64, np.float64, False),
        (np.bool_, np.float16, True),
        (np.float32, np.int64, False),
        (np.float32, np.bool_, False),
    ],
)
def test_lossless(src, dst, expected):
    assert lossless(np.dtype(src), np.dtype(dst)) is expected


def test_cast_to_same_type_is_removed(ortc):
    x = gs.Variable("x", dtype=np.float32, shape=[4])
    cast, h = _cast(x, T.FLOAT, "h", np.float32)
    y = gs.Variable("y", dtype=np.float32, shape=[4])
    graph = ortc.graph([cast, gs.Node("Relu", inputs=[h], outputs=[y])], [x], [y])
    before = ortc.model(graph)
    assert fold_casts(graph) == 1
    assert [n.op for n in graph.nodes] == ["Relu"]
    ortc.assert_same(before, ortc.model(graph), {"x": np.array([-1, 0, 2, 3.5], np.float32)})


def test_lossless_round_trip_disappears(ortc):
    # int32 -> int64 -> int32: the exporter's index arithmetic pattern.
    x = gs.Variable("x", dtype=np.int32, shape=[3])
    up, wide = _cast(x, T.INT64, "wide", np.int64)
    down, narrow = _cast(wide, T.INT32, "narrow", np.int32)
    y = gs.Variable("y", dtype=np.int32, shape=[3])
    graph = ortc.graph([up, down, gs.Node("Neg", inputs=[narrow], outputs=[y])], [x], [y])
    before = ortc.model(graph)
    assert fold_casts(graph) == 2
    assert [n.op for n in graph.nodes] == ["Neg"]
    ortc.assert_same(before, ortc.model(graph), {"x": np.array([-7, 0, 2**31 - 1], np.int32)})


def test_chain_through_a_lossless_cast_is_shortened(ortc):
    x = gs.Variable("x", dtype=np.float16, shape=[3])
    up, f32 = _cast(x, T.FLOAT, "f32", np.float32)
    to_int, y = _cast(f32, T.INT32, "y", np.int32)
    graph = ortc.graph([up, to_int], [x], [y])
    before = ortc.model(graph)
    assert fold_casts(graph) == 1
    assert [n.op for n in graph.nodes] == ["Cast"] and graph.nodes[0].inputs[0] is x and y in graph.outputs
    ortc.assert_same(before, ortc.model(graph), {"x": np.array([-2.5, 0.75, 1000.0], np.float16)})


def test_lossy_round_trip_is_kept(ortc):
    # float32 -> int32 -> float32 truncates: it is a computation, not a no-op.
    x = gs.Variable("x", dtype=np.float32, shape=[3])
    down, i32 = _cast(x, T.INT32, "i32", np.int32)
    up, y = _cast(i32, T.FLOAT, "y", np.float32)
    graph = ortc.graph([down, up], [x], [y])
    assert fold_casts(graph) == 0
    assert [n.op for n in graph.nodes] == ["Cast", "Cast"]


def test_cast_of_unknown_dtype_is_left_alone(ortc):
    x = gs.Variable("x", dtype=np.float32, shape=[3])
    h = gs.Variable("h")  # no dtype: shape inference has not run
    y = gs.Variable("y", dtype=np.float32, shape=[3])
    nodes = [gs.Node("Relu", inputs=[x], outputs=[h]), gs.Node("Cast", attrs={"to": T.FLOAT}, inputs=[h], outputs=[y])]
    graph = ortc.graph(nodes, [x], [y])
    assert fold_casts(graph) == 0
