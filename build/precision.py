"""FP16 / BF16 graphs for GPU targets: onnx/<component>.<fp16|bf16>.onnx, each gated against FP32 before use.

Conversion is NVIDIA ModelOpt's AutoCast (modelopt.onnx.autocast): it runs the FP32 graph once in
ONNX Runtime on seeded sample inputs and keeps in FP32 every node whose measured inputs/outputs
exceed DATA_MAX (the FP16 overflow risk, e.g. Softmax inputs where they are large), plus the
normalisation ops in KEEP_FP32_OPS (their statistics), inserting the casts; graph I/O stays FP32.
BF16 is used where FP16 overflows: a family may name components that always need it (T5-family
encoders), and a component whose FP16 graph fails the gate with NaN/Inf is retried in BF16.

The gate is `compare`'s: the variant vs onnx/<component>.onnx on the same seeded inputs, with the
[graph.<component>.<precision>] thresholds of build/compare/tolerances.toml. FP16 graphs run in
ONNX Runtime directly; its CPU provider has no BF16 kernels, so a BF16 graph is gated through an
emulation that computes in FP32 and rounds every BF16 tensor to BF16 (TensorRT also accumulates in FP32).
A variant is written aside, gated, then renamed, with onnx/<component>.<precision>.json recording
the input graph's sha256, the settings and the gate's figures; a rerun with the same inputs does nothing.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from t2vtrt.build.artifacts import COMPONENTS, ArtifactPaths, read_export_info
from t2vtrt.runtime.errors import T2VError
from t2vtrt.runtime.files import sha256_file, write_json

LOW_PRECISIONS = ("fp16", "bf16")
# Normalisation statistics (mean/variance over thousands of values) stay FP32; TensorRT runs these ops in FP32 then.
KEEP_FP32_OPS = ("InstanceNormalization", "LayerNormalization", "GroupNormalization")
# A node whose measured |input| or |output| exceeds this stays FP32 (ModelOpt's default: FP16 max is 65504,
# and products of such values overflow long before).
DATA_MAX = 512.0
# Graphs above this are saved with their weights in one <graph>.onnx.data file (protobuf's 2 GB limit).
EXTERNAL_DATA_BYTES = 1 << 30
RECORD_VERSION = 1
# Components that must skip FP16 (known FP16 overflow), per family: T5-family text encoders.
ALWAYS_BF16: dict[str, tuple[str, ...]] = {}

Progress = Callable[[str], None]


def variant_path(paths: ArtifactPaths, component: str, precision: str) -> Path:
    """onnx/<component>.<precision>.onnx."""
    return paths.onnx(component, precision)


def record_path(paths: ArtifactPaths, component: str, precision: str) -> Path:
    """onnx/<component>.<precision>.json: inputs' hashes, settings, gate figures."""
    return paths.onnx_dir / f"{component}.{precision}.json"


def write_low_precision(paths: ArtifactPaths, allowed: tuple[str, ...], tolerances: dict[str, Any] | None = None,
                        on_step: Progress | None = None) -> dict[str, dict[str, Any]]:
    """Per component, the FP16 (or BF16) graph a GPU target builds from; returns each component's record."""
    from t2vtrt.build.compare.tolerances import load_tolerances

    info = read_export_info(paths)
    tolerances = tolerances or load_tolerances()
    records = {}
    for component in COMPONENTS:
        order = preferred_order(info["model"]["family"], component, allowed)
        if not paths.onnx(component).is_file():
            continue  # no exported FP32 reference to gate against (hand-made artifacts): the target builds FP32
        if order:
            records[component] = _first_passing(paths, info, component, order, tolerances, on_step or (lambda _: None))
    return records


def preferred_order(family: str, component: str, allowed: tuple[str, ...]) -> list[str]:
    """Which low precisions to try, in order: BF16 first (only) where the family says FP16 overflows."""
    order = ["bf16"] if component in ALWAYS_BF16.get(family, ()) else ["fp16", "bf16"]
    return [p for p in order if p in allowed]


def _first_passing(paths: ArtifactPaths, info: dict[str, Any], component: str, order: list[str],
                   tolerances: dict[str, Any], step: Progress) -> dict[str, Any]:
    """The first precision of `order` whose graph passes its gate (the only one left on disk); the last record when none does."""
    record: dict[str, Any] = {}
    for precision in order:
        record = ensure_variant(paths, info, component, precision, tolerances, step)
        if record["gate"]["passed"] or not record["gate"].get("nonfinite"):
            break  # in range but not accurate enough: BF16 (fewer mantissa bits) would do worse
    chosen = record["precision"] if record["gate"]["passed"] else None
    for other in LOW_PRECISIONS:  # the plan builds exactly the variant that passed
        if other != chosen and variant_path(paths, component, other).is_file():
            _remove_variant(paths, component, other, keep_record=other in order)
    return record


def _remove_variant(paths: ArtifactPaths, component: str, precision: str, keep_record: bool = False) -> None:
    """Delete a variant graph and its weights (and its record unless kept: a failed gate stays on record)."""
    graph = variant_path(paths, component, precision)
    for file in (graph, graph.with_name(graph.name + ".data")):
        file.unlink(missing_ok=True)
    if not keep_record:
        record_path(paths, component, precision).unlink(missing_ok=True)


def ensure_variant(paths: ArtifactPaths, info: dict[str, Any], component: str, precision: str,
                   tolerances: dict[str, Any], step: Progress) -> dict[str, Any]:
    """Write and gate one variant unless its record says it was made from these very inputs."""
    source, reference = paths.onnx(component, "opt"), paths.onnx(component)
    inputs = {"source": sha256_file(source), "reference": sha256_file(reference)}
    settings = {"keep_fp32_ops": list(KEEP_FP32_OPS), "data_max": DATA_MAX, "gate_shape": "min",
                "thresholds": _thresholds(tolerances, component, precision)}
    record_file = record_path(paths, component, precision)
    if record_file.is_file():
        old = json.loads(record_file.read_text())
        fresh = old.get("version") == RECORD_VERSION and old.get("inputs") == inputs and old.get("settings") == settings
        if fresh and (not old["gate"]["passed"] or variant_path(paths, component, precision).is_file()):
            return old
    step(f"{component} {precision}")
    feeds = gate_feeds(info, component)
    out = variant_path(paths, component, precision)
    with tempfile.TemporaryDirectory(prefix=f".{component}.{precision}.", dir=paths.onnx_dir) as tmp:
        staged = Path(tmp) / out.name
        model = convert(source, precision, feeds, Path(tmp))
        save_graph(model, staged)
        del model
        gate = gate_variant(staged, reference, precision, feeds, settings["thresholds"])
        if gate["passed"]:
            _publish(staged, out)
        else:
            _remove_variant(paths, component, precision, keep_record=True)
    record = {"version": RECORD_VERSION, "component": component, "precision": precision, "file": out.name if gate["passed"] else None,
              "inputs": inputs, "settings": settings, "gate": gate}
    write_json(record_file, record)
    return record


def _thresholds(tolerances: dict[str, Any], component: str, precision: str) -> dict[str, float]:
    """[graph.<component>.<precision>] from the tolerances; a variant without one is never used."""
    from t2vtrt.build.compare.tolerances import graph_thresholds

    found = graph_thresholds(tolerances, component, precision)
    if found is None:
        raise T2VError(f"no thresholds for {component} {precision} in the tolerances file: measure it and add "
                       f"[graph.{component}.{precision}] to build/compare/tolerances.toml")
    return found


def gate_feeds(info: dict[str, Any], component: str) -> list[dict[str, np.ndarray]]:
    """Two seeded sample inputs at the profile's min shape (small enough for a real-size graph on a CPU)."""
    from t2vtrt.build.export import sample_inputs

    spec = spec_from_json(component, info["components"][component])
    return [sample_inputs(spec, "min", seed=seed) for seed in (0, 1)]


def spec_from_json(name: str, data: dict[str, Any]) -> Any:
    """export.json's component entry back into a ComponentSpec."""
    from t2vtrt.build.families.spec import ComponentSpec, TensorSpec

    def tensors(entries: list[dict[str, Any]]) -> tuple[TensorSpec, ...]:
        return tuple(TensorSpec(t["name"], t["dtype"], tuple(t["shape"]), tuple(t["value_range"]) if "value_range" in t else None)
                     for t in entries)

    return ComponentSpec(name, tensors(data["inputs"]), tensors(data["outputs"]), {k: tuple(v) for k, v in data["axes"].items()})


def convert(source: Path, precision: str, feeds: list[dict[str, np.ndarray]], work: Path) -> Any:
    """ModelOpt AutoCast of `source` to `precision`, FP32 I/O, measured on the first of `feeds`."""
    import logging

    from modelopt.onnx.autocast import convert_to_mixed_precision

    logging.getLogger("modelopt").setLevel(logging.ERROR)  # its per-graph warnings are routine
    calibration = work / "calibration.npz"
    np.savez(calibration, **feeds[0])
    with contextlib.chdir(work):  # AutoCast's reference run drops files named after the outputs in the cwd
        model = convert_to_mixed_precision(str(source), low_precision_type=precision, keep_io_types=True,
                                           op_types_to_exclude=list(KEEP_FP32_OPS), data_max=DATA_MAX,
                                           calibration_data=str(calibration))
    # AutoCast leaves value_info with the calibration shapes baked in; ONNX Runtime then rejects other shapes.
    del model.graph.value_info[:]
    return model


def save_graph(model: Any, path: Path) -> None:
    """Save a graph; past EXTERNAL_DATA_BYTES of weights, into one <graph>.onnx.data file beside it."""
    import onnx

    weights = sum(t.ByteSize() for t in model.graph.initializer)
    if weights > EXTERNAL_DATA_BYTES:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=path.name + ".data", size_threshold=1024)
    else:
        onnx.save_model(model, str(path))


def _publish(staged: Path, out: Path) -> None:
    """Rename the gated graph (weights first, so a graph never precedes its data) into place."""
    data = staged.with_name(staged.name + ".data")
    if data.is_file():
        os.replace(data, out.with_name(out.name + ".data"))
    else:
        out.with_name(out.name + ".data").unlink(missing_ok=True)
    os.replace(staged, out)


# --------------------------------------------------------------------------- the gate


def gate_variant(candidate: Path, reference: Path, precision: str, feeds: list[dict[str, np.ndarray]],
                 thresholds: dict[str, float]) -> dict[str, Any]:
    """Run both graphs on `feeds`; the worst metrics per output against `thresholds` (NaN/Inf fail)."""
    from t2vtrt.build.compare.gates import Check, gate_graph
    from t2vtrt.build.compare.metrics import worst

    runnable = emulated(candidate, candidate.with_name("emulated." + candidate.name)) if precision == "bf16" else candidate
    ref_outputs = run_graph(reference, feeds)
    got_outputs = run_graph(runnable, feeds)
    iterations = [{name: metrics(got[name], ref[name]) for name in ref} for got, ref in zip(got_outputs, ref_outputs)]
    nonfinite = {name: int(sum(np.count_nonzero(~np.isfinite(g[name])) for g in got_outputs)) for name in ref_outputs[0]}
    check = gate_graph(Check("graph", f"{candidate.name.split('.')[0]} {precision}", precision), worst(iterations), nonfinite, thresholds)
    return {"passed": not check.failures, "metrics": check.metrics, "failures": check.failures,
            "nonfinite": sum(nonfinite.values()), "feeds": len(feeds), "emulated": precision == "bf16"}


def metrics(got: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """compare's four figures: relative L2, max |diff|, cosine, PSNR (peak = max of the reference, capped at 200)."""
    got64, ref64 = got.astype(np.float64).ravel(), ref.astype(np.float64).ravel()
    diff = got64 - ref64
    ref_norm, got_norm = float(np.linalg.norm(ref64)), float(np.linalg.norm(got64))
    mse = float(np.mean(diff**2)) if np.isfinite(diff).all() else math.inf
    peak = float(np.max(ref64))
    psnr = 200.0 if mse == 0 else (10 * math.log10(peak**2 / mse) if peak > 0 and math.isfinite(mse) else -math.inf)
    return {
        "rel_l2": float(np.linalg.norm(diff)) / ref_norm if ref_norm > 0 else math.inf,
        "max_abs": float(np.max(np.abs(diff))),
        "cosine": float(got64 @ ref64) / (got_norm * ref_norm) if got_norm * ref_norm > 0 else 0.0,
        "psnr": min(psnr, 200.0),
    }


def run_graph(path: Path, feeds: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """Outputs of a graph in ONNX Runtime's CPU provider, one dict per feed."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return [dict(zip(names, session.run(None, feed))) for feed in feeds]


def emulated(path: Path, out: Path) -> Path:
    """The BF16 graph as ONNX Runtime's CPU provider can run it (written to out): FP32 math, every BF16 tensor rounded to BF16."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    bf16 = _bf16_tensors(path)
    model = onnx.load(str(path))
    graph = model.graph
    for init in graph.initializer:
        if init.data_type == TensorProto.BFLOAT16:
            init.CopyFrom(numpy_helper.from_array(_bf16_to_float(init), init.name))
    nodes = []
    for node in graph.node:
        for attr in node.attribute:
            if node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.BFLOAT16:
                attr.i = TensorProto.FLOAT  # the rounding is the pair added below
            if attr.name == "value" and attr.t.data_type == TensorProto.BFLOAT16:
                attr.t.CopyFrom(numpy_helper.from_array(_bf16_to_float(attr.t)))
        nodes.append(node)
        for out in node.output:
            if out in bf16:  # compute in FP32, store as BF16: round through a Cast pair
                rounded = f"{out}__bf16"
                node.output[list(node.output).index(out)] = rounded
                nodes += [helper.make_node("Cast", [rounded], [f"{out}__q"], to=TensorProto.BFLOAT16),
                          helper.make_node("Cast", [f"{out}__q"], [out], to=TensorProto.FLOAT)]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]
    save_graph(model, out)
    return out


def _bf16_tensors(path: Path) -> set[str]:
    """Names of the non-initializer tensors that are BF16 in the graph (type inference; weights not loaded)."""
    import onnx
    from onnx import TensorProto

    inferred = onnx.shape_inference.infer_shapes(onnx.load(str(path), load_external_data=False))
    return {v.name for v in (*inferred.graph.value_info, *inferred.graph.output)
            if v.type.tensor_type.elem_type == TensorProto.BFLOAT16}


def _bf16_to_float(tensor: Any) -> np.ndarray:
    """A BF16 initializer's values as float32 (BF16 is the top half of a float32)."""
    # raw bits are read directly: numpy has no bfloat16 dtype
    raw = np.frombuffer(tensor.raw_data, dtype=np.uint16) if tensor.raw_data else np.asarray(tensor.int32_data, dtype=np.uint16)
    return (raw.astype(np.uint32) << 16).view(np.float32).reshape(tuple(tensor.dims))
