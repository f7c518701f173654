"""FP16 / BF16 graphs of the exported tiny model: converted, gated against FP32, reused, refused when the gate fails."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto

from t2vtrt.build import precision
from t2vtrt.build.artifacts import ArtifactPaths, read_export_info
from t2vtrt.build.compare.tolerances import load_tolerances


@pytest.fixture(scope="module")
def fp16_paths(tiny_paths: ArtifactPaths, tmp_path_factory: pytest.TempPathFactory) -> ArtifactPaths:
    """A private copy of the tiny model's onnx/ with its FP16 graphs written (once per module)."""
    paths = ArtifactPaths(tmp_path_factory.mktemp("fp16") / "tiny")
    shutil.copytree(tiny_paths.onnx_dir, paths.onnx_dir)
    precision.write_low_precision(paths, ("fp16", "bf16"))
    return paths


def test_every_component_gets_a_gated_fp16_graph(fp16_paths: ArtifactPaths) -> None:
    """fp16 passes for all three (bf16 is not written beside it); I/O stays FP32; norms stay FP32; metrics recorded."""
    records = precision.write_low_precision(fp16_paths, ("fp16", "bf16"))
    for component, record in records.items():
        assert record["precision"] == "fp16" and record["gate"]["passed"], (component, record["gate"])
        assert not precision.variant_path(fp16_paths, component, "bf16").exists()
        model = onnx.load(str(precision.variant_path(fp16_paths, component, "fp16")))
        float_inputs = [v for v in model.graph.input if v.type.tensor_type.elem_type in (TensorProto.FLOAT, TensorProto.FLOAT16)]
        assert all(v.type.tensor_type.elem_type == TensorProto.FLOAT for v in float_inputs)
        assert all(v.type.tensor_type.elem_type == TensorProto.FLOAT for v in model.graph.output)
        assert sum(t.data_type == TensorProto.FLOAT16 for t in model.graph.initializer) > 0
        (metrics,) = record["gate"]["metrics"].values()
        assert 0 < metrics["rel_l2"] <= record["settings"]["thresholds"]["rel_l2"] and metrics["nonfinite"] == 0
    model = onnx.load(str(precision.variant_path(fp16_paths, "denoiser", "fp16")))
    types = {v.name: v.type.tensor_type.elem_type for v in onnx.shape_inference.infer_shapes(model).graph.value_info}
    norms = [n for n in model.graph.node if n.op_type in precision.KEEP_FP32_OPS]
    assert norms and all(types.get(n.output[0]) == TensorProto.FLOAT for n in norms)


def test_rerun_with_the_same_inputs_reuses_the_graphs(fp16_paths: ArtifactPaths) -> None:
    """The record's input hashes match: nothing is converted again (the file is untouched)."""
    graph = precision.variant_path(fp16_paths, "text_encoder", "fp16")
    before = graph.stat().st_mtime_ns
    steps: list[str] = []
    precision.write_low_precision(fp16_paths, ("fp16",), on_step=steps.append)
    assert steps == [] and graph.stat().st_mtime_ns == before


def test_a_failing_gate_writes_no_graph(fp16_paths: ArtifactPaths, tmp_path: Path) -> None:
    """An fp16 text encoder held to rel_l2 1e-9 fails (finite, so bf16 is not tried): no graph, a record that says why."""
    paths = ArtifactPaths(tmp_path / "tiny")
    shutil.copytree(fp16_paths.onnx_dir, paths.onnx_dir)
    precision.record_path(paths, "text_encoder", "fp16").unlink()
    tolerances = copy.deepcopy(load_tolerances())
    tolerances["graph"]["text_encoder"]["fp16"]["rel_l2"] = 1e-9
    record = precision.ensure_variant(paths, read_export_info(paths), "text_encoder", "fp16", tolerances, lambda _: None)
    assert not record["gate"]["passed"] and "rel_l2" in " ".join(record["gate"]["failures"])
    assert not precision.variant_path(paths, "text_encoder", "fp16").exists() and record["file"] is None


def test_bf16_graph_is_gated_through_emulation(fp16_paths: ArtifactPaths, tmp_path: Path) -> None:
    """BF16 (no ONNX Runtime CPU kernels): gated emulated, finite, less exact than FP16 (8 vs 11 significant bits)."""
    paths = ArtifactPaths(tmp_path / "tiny")
    shutil.copytree(fp16_paths.onnx_dir, paths.onnx_dir)
    info, tolerances = read_export_info(paths), load_tolerances()
    bf16 = precision.ensure_variant(paths, info, "text_encoder", "bf16", tolerances, lambda _: None)
    fp16 = precision.ensure_variant(paths, info, "text_encoder", "fp16", tolerances, lambda _: None)
    assert bf16["gate"]["passed"] and bf16["gate"]["emulated"], bf16["gate"]
    (b,), (f,) = bf16["gate"]["metrics"].values(), fp16["gate"]["metrics"].values()
    assert b["rel_l2"] > 2 * f["rel_l2"] and b["nonfinite"] == 0
    model = onnx.load(str(precision.variant_path(paths, "text_encoder", "bf16")))
    assert any(t.data_type == TensorProto.BFLOAT16 for t in model.graph.initializer)
    # The emulation lands where asked (a loop variable once renamed it after the graph's last output, in the cwd).
    out = tmp_path / "emulated.onnx"
    assert precision.emulated(precision.variant_path(paths, "text_encoder", "bf16"), out) == out and out.is_file()


def test_missing_threshold_is_a_one_line_error(fp16_paths: ArtifactPaths, tmp_path: Path) -> None:
    """A precision with no [graph.<c>.<p>] entry is refused, naming the table to add."""
    from t2vtrt.runtime.errors import T2VError

    tolerances = copy.deepcopy(load_tolerances())
    del tolerances["graph"]["vae_decoder"]["fp16"]
    paths = ArtifactPaths(tmp_path / "tiny")
    shutil.copytree(fp16_paths.onnx_dir, paths.onnx_dir)
    with pytest.raises(T2VError, match=r"\[graph\.vae_decoder\.fp16\]"):
        precision.ensure_variant(paths, read_export_info(paths), "vae_decoder", "fp16", tolerances, lambda _: None)


def test_preferred_order_follows_the_profile_and_family() -> None:
    """fp16 then bf16 where both run; bf16 only for a family's known-overflow component; nothing on an fp32-only GPU."""
    assert precision.preferred_order("unet3d", "text_encoder", ("fp16", "bf16")) == ["fp16", "bf16"]
    assert precision.preferred_order("unet3d", "denoiser", ("fp16",)) == ["fp16"]
    assert precision.preferred_order("unet3d", "denoiser", ()) == []
    assert precision.preferred_order("wan", "text_encoder", ("fp16", "bf16")) == ["bf16"]  # UMT5 overflows FP16
    assert precision.preferred_order("wan", "text_encoder", ("fp16",)) == []  # no BF16 on the GPU: it stays FP32


def _autocast(source: Path, precision_name: str, feed: dict, work: Path) -> Path:
    """ModelOpt AutoCast as the whole-graph call (weights in memory), saved to work/autocast.onnx."""
    import contextlib

    import numpy as np
    from modelopt.onnx.autocast import convert_to_mixed_precision

    np.savez(work / "calibration.npz", **feed)
    with contextlib.chdir(work):
        model = convert_to_mixed_precision(
            str(source),
            low_precision_type=precision_name,
            keep_io_types=True,
            op_types_to_exclude=list(precision.KEEP_FP32_OPS),
            data_max=precision.DATA_MAX,
            calibration_data=str(work / "calibration.npz"),
        )
    del model.graph.value_info[:]
    onnx.save(model, str(work / "autocast.onnx"))
    return work / "autocast.onnx"


@pytest.mark.parametrize(("component", "one_file"), [("denoiser", False), ("vae_decoder", False), ("vae_decoder", True)])
def test_weights_on_disk_conversion_is_autocasts(tiny_paths: ArtifactPaths, tmp_path: Path, monkeypatch, component: str, one_file: bool) -> None:
    """The conversion with every weight left on disk (none read in, one .data out) computes exactly what AutoCast's
    whole-graph conversion does: the same ops in the same precisions, bit-identical outputs. A graph saved in one
    file has its weights moved out first, then goes the same way."""
    from collections import Counter

    import numpy as np

    from t2vtrt.build import graphfiles

    info = read_export_info(tiny_paths)
    feeds = precision.gate_feeds(info, component)
    source = tmp_path / "src" / f"{component}.opt.onnx"
    source.parent.mkdir()
    if one_file:  # its weights are moved to the work folder first
        shutil.copy(tiny_paths.onnx(component, "opt"), source)
    else:
        onnx.save(
            onnx.load(str(tiny_paths.onnx(component, "opt"))),
            str(source),
            save_as_external_data=True,
            location=source.name + ".data",
            size_threshold=0,
        )
    expected = _autocast(tiny_paths.onnx(component, "opt"), "fp16", feeds[0], tmp_path)
    monkeypatch.setattr(graphfiles, "INLINE_BYTES", 1024)  # every weight is a placeholder while AutoCast runs
    monkeypatch.setattr(graphfiles, "EXTERNAL_DATA_BYTES", 0)
    (source.parent / "work").mkdir()
    model, fill = precision.convert(source, "fp16", feeds, source.parent / "work")
    placeholders = [t for t in model.graph.initializer if t.doc_string]  # weights AutoCast never read
    assert len(placeholders) > 20 and all(len(t.raw_data) == 1 for t in placeholders)
    out = tmp_path / "out" / f"{component}.fp16.onnx"
    precision.save_graph(model, out, fill)
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name, out.name + ".data"]
    got, want = onnx.load(str(out)), onnx.load(str(expected))
    assert Counter(n.op_type for n in got.graph.node) == Counter(n.op_type for n in want.graph.node)
    assert Counter(t.data_type for t in got.graph.initializer) == Counter(t.data_type for t in want.graph.initializer)
    for feed in feeds:
        (a,), (b,) = (precision.run_graph(path, [feed])[0].values() for path in (out, expected))
        np.testing.assert_array_equal(a, b)


def test_modelopt_logs_only_errors_even_from_modules_imported_later() -> None:
    """AutoCast's per-node INFO lines (over a thousand per real-size graph) stay out of the stage's output."""
    import logging

    from t2vtrt.build.precision import quiet_modelopt

    quiet_modelopt()
    from modelopt.onnx.autocast import nodeclassifier, precisionconverter  # noqa: F401  (their imports configure logging)
    from modelopt.onnx.autocast.logging_config import logger as autocast_logger
    from modelopt.onnx.logging_config import logger as onnx_logger

    assert not autocast_logger.isEnabledFor(logging.INFO) and not onnx_logger.isEnabledFor(logging.WARNING)
