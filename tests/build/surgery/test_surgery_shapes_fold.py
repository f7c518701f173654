"""infer_shapes and fold_constants."""

import numpy as np
import onnx_graphsurgeon as gs

from t2vtrt.build.surgery.fold import fold_constants
from t2vtrt.build.surgery.shapes import infer_shapes


def test_infer_shapes_annotates_intermediates_without_touching_weights(ortc):
    x = gs.Variable("x", dtype=np.float32, shape=["batch", 3])
    w = gs.Constant("w", np.ones((3, 100), np.float32))  # big enough to be left out of the inferred copy
    h, y = gs.Variable("h"), gs.Variable("y", dtype=np.float32, shape=["batch", 100])
    nodes = [gs.Node("MatMul", inputs=[x, w], outputs=[h]), gs.Node("Relu", inputs=[h], outputs=[y])]
    graph = ortc.graph(nodes, [x], [y])
    assert infer_shapes(graph) == 1
    assert h.dtype == np.float32 and h.shape == ["batch", 100]
    assert isinstance(graph.nodes[0].inputs[1], gs.Constant) and graph.inputs == [x]  # the original is untouched
    assert infer_shapes(graph) == 0  # nothing new the second time


def test_fold_constants_folds_static_shape_arithmetic(ortc, op_list):
    # Reshape(x, Concat([-1], Unsqueeze(Gather(Shape(x), 1)))): dim 1 is static, so the target folds to [-1, 4].
    x = gs.Variable("x", dtype=np.float32, shape=["batch", 4, 1])
    shape, dim, dim1, target = (gs.Variable(n) for n in ("shape", "dim", "dim1", "target"))
    y = gs.Variable("y", dtype=np.float32, shape=["batch", 4])
    nodes = [
        gs.Node("Shape", inputs=[x], outputs=[shape]),
        gs.Node("Gather", attrs={"axis": 0}, inputs=[shape, gs.Constant("one", np.array(1, np.int64))], outputs=[dim]),
        gs.Node("Unsqueeze", inputs=[dim, gs.Constant("axes", np.array([0], np.int64))], outputs=[dim1]),
        gs.Node("Concat", attrs={"axis": 0}, outputs=[target], inputs=[gs.Constant("minus1", np.array([-1], np.int64)), dim1]),
        gs.Node("Reshape", inputs=[x, target], outputs=[y]),
    ]
    graph = ortc.graph(nodes, [x], [y])
    before = ortc.model(graph)
    assert fold_constants(graph) == 4
    assert op_list(graph) == ["Reshape"]
    assert graph.nodes[0].inputs[1].values.tolist() == [-1, 4]
    ortc.assert_same(before, ortc.model(graph), {"x": np.arange(12, dtype=np.float32).reshape(3, 4, 1)})


def test_fold_constants_evaluates_constant_subgraphs(ortc, op_list):
    x = gs.Variable("x", dtype=np.float32, shape=[2])
    s, y = gs.Variable("s"), gs.Variable("y", dtype=np.float32, shape=[2])
    a, b = gs.Constant("a", np.array([1.0, 2.0], np.float32)), gs.Constant("b", np.array([3.0, 4.0], np.float32))
    nodes = [gs.Node("Add", inputs=[a, b], outputs=[s]), gs.Node("Mul", inputs=[x, s], outputs=[y])]
    graph = ortc.graph(nodes, [x], [y])
    before = ortc.model(graph)
    assert fold_constants(graph) == 1
    assert op_list(graph) == ["Mul"] and graph.nodes[0].inputs[1].values.tolist() == [4.0, 6.0]
    ortc.assert_same(before, ortc.model(graph), {"x": np.array([0.5, -2.0], np.float32)})


def test_fold_constants_reads_weights_left_on_disk_that_it_folds(ortc, tmp_path):
    """Gather(table, constant ids) folds although the table is on disk (ONNX Runtime refuses the absolute path
    such a weight has); the weight that only a run-time MatMul reads stays on disk."""
    import onnx

    from t2vtrt.build.graphfiles import import_graph, on_disk, save_graph

    rng = np.random.default_rng(0)
    x = gs.Variable("x", dtype=np.float32, shape=[3, 64])
    table = gs.Constant("table", rng.standard_normal((3, 64)).astype(np.float32))
    ids = gs.Constant("ids", np.array([2, 0, 1], np.int64))
    w = gs.Constant("w", rng.standard_normal((64, 64)).astype(np.float32))
    pos, h, y = gs.Variable("pos"), gs.Variable("h"), gs.Variable("y", dtype=np.float32, shape=[3, 64])
    nodes = [
        gs.Node("Gather", inputs=[table, ids], outputs=[pos]),
        gs.Node("Add", inputs=[x, pos], outputs=[h]),
        gs.Node("MatMul", inputs=[h, w], outputs=[y]),
    ]
    before = ortc.model(ortc.graph(nodes, [x], [y]))
    path, split = tmp_path / "m.onnx", onnx.ModelProto()
    split.CopyFrom(before)  # onnx.save re-points the tensors of the model it saves
    onnx.save(split, str(path), save_as_external_data=True, all_tensors_to_one_file=False, size_threshold=0)
    graph = import_graph(path, inline_bytes=64)  # the table (768 bytes) and w stay on disk; ids is read
    assert on_disk(graph.tensors()["table"]) and on_disk(graph.tensors()["w"])
    fold_constants(graph)
    assert [n.op for n in graph.nodes] == ["Add", "MatMul"]
    assert on_disk(graph.tensors()["w"])
    after = save_graph(gs.export_onnx(graph), tmp_path / "out" / "m.onnx", external=False)
    ortc.assert_same(before, onnx.load(str(after)), {"x": np.ones((3, 64), np.float32)})


def test_fold_reads_an_on_disk_weight_gathered_by_ids_sliced_to_a_shapes_known_axis(ortc, tmp_path, capfd):
    """The CLIP text encoder's position embedding: Gather(table on disk, Slice(Constant node, 0, Shape(x)[1])) under a
    dynamic batch. The table is read before graphsurgeon's first folding call, which would otherwise fail as a
    whole on its absolute external path ("Inference failed") and fold nothing until a later round."""
    import onnx

    from t2vtrt.build.graphfiles import import_graph, on_disk, save_graph

    rng = np.random.default_rng(0)
    x = gs.Variable("x", dtype=np.float32, shape=["batch", 3, 64])
    table = gs.Constant("table", rng.standard_normal((5, 64)).astype(np.float32))
    w = gs.Constant("w", rng.standard_normal((64, 64)).astype(np.float32))
    names = ("all_ids", "shape", "length", "end", "ids", "pos", "h")
    all_ids, shape, length, end, ids, pos, h = (gs.Variable(n) for n in names)
    y = gs.Variable("y", dtype=np.float32, shape=["batch", 3, 64])
    one = gs.Constant("one", np.array([1], np.int64))
    nodes = [
        gs.Node("Constant", attrs={"value": gs.Constant("value", np.arange(5, dtype=np.int64)[None])}, outputs=[all_ids]),
        gs.Node("Shape", inputs=[x], outputs=[shape]),
        gs.Node("Gather", attrs={"axis": 0}, inputs=[shape, gs.Constant("axis1", np.array(1, np.int64))], outputs=[length]),
        gs.Node("Unsqueeze", inputs=[length, gs.Constant("axes", np.array([0], np.int64))], outputs=[end]),
        gs.Node("Slice", inputs=[all_ids, gs.Constant("zero", np.array([0], np.int64)), end, one], outputs=[ids]),
        gs.Node("Gather", inputs=[table, ids], outputs=[pos]),
        gs.Node("Add", inputs=[x, pos], outputs=[h]),
        gs.Node("MatMul", inputs=[h, w], outputs=[y]),
    ]
    before = ortc.model(ortc.graph(nodes, [x], [y]))
    path, split = tmp_path / "m.onnx", onnx.ModelProto()
    split.CopyFrom(before)
    onnx.save(split, str(path), save_as_external_data=True, all_tensors_to_one_file=False, size_threshold=0)
    graph = import_graph(path, inline_bytes=64)
    assert on_disk(graph.tensors()["table"]) and on_disk(graph.tensors()["w"])
    capfd.readouterr()
    fold_constants(graph)
    assert "Inference failed" not in "".join(capfd.readouterr())
    assert [n.op for n in graph.nodes] == ["Add", "MatMul"]
    assert on_disk(graph.tensors()["w"])
    after = save_graph(gs.export_onnx(graph), tmp_path / "out" / "m.onnx", external=False)
    ortc.assert_same(before, onnx.load(str(after)), {"x": np.ones((2, 3, 64), np.float32)})
