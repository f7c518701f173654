"""FP16 / BF16 graphs for GPU targets: onnx/<component>.<fp16|bf16>.onnx, each gated against FP32 before use.

Conversion is NVIDIA ModelOpt's AutoCast (modelopt.onnx.autocast): it runs the FP32 graph once in
ONNX Runtime on seeded sample inputs and keeps in FP32 every node whose measured inputs/outputs
exceed DATA_MAX (the FP16 overflow risk, e.g. Softmax inputs where they are large), plus the
normalisation ops in KEEP_FP32_OPS (their statistics), inserting the casts; graph I/O stays FP32.
AutoCast's steps run here on the graph with its weights left on disk (see `convert`), so a 5.6 GB FP32
denoiser converts in a few GB: the reference run reduces each tensor to its |max| inside ONNX Runtime and
each weight is read and converted once, as the <graph>.onnx.data file is written.
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

from t2vtrt.build.artifacts import ArtifactPaths, components_of, read_export_info
from t2vtrt.runtime.errors import T2VError
from t2vtrt.runtime.files import sha256_file, write_json

LOW_PRECISIONS = ("fp16", "bf16")
# Normalisation statistics (mean/variance over thousands of values) stay FP32; TensorRT runs these ops in FP32 then.
KEEP_FP32_OPS = ("InstanceNormalization", "LayerNormalization", "GroupNormalization")
# A node whose measured |input| or |output| exceeds this stays FP32 (ModelOpt's default: FP16 max is 65504,
# and products of such values overflow long before).
DATA_MAX = 512.0
RECORD_VERSION = 1
# Components that must skip FP16 (known FP16 overflow), per family: T5-family text encoders.
ALWAYS_BF16: dict[str, tuple[str, ...]] = {"wan": ("text_encoder",)}  # UMT5 (the TensorRT demo runs T5 in BF16)

Progress = Callable[[str], None]


def variant_path(paths: ArtifactPaths, component: str, precision: str) -> Path:
    """onnx/<component>.<precision>.onnx."""
    return paths.onnx(component, precision)


def record_path(paths: ArtifactPaths, component: str, precision: str) -> Path:
    """onnx/<component>.<precision>.json: inputs' hashes, settings, gate figures."""
    return paths.onnx_dir / f"{component}.{precision}.json"


def write_low_precision(
    paths: ArtifactPaths, allowed: tuple[str, ...], tolerances: dict[str, Any] | None = None, on_step: Progress | None = None
) -> dict[str, dict[str, Any]]:
    """Per component, the FP16 (or BF16) graph a GPU target builds from; returns each component's record."""
    from t2vtrt.build.compare.tolerances import load_tolerances

    info = read_export_info(paths)
    tolerances = tolerances or load_tolerances()
    records = {}
    for component in components_of(info):  # a streaming VAE is two graphs
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


def _first_passing(
    paths: ArtifactPaths, info: dict[str, Any], component: str, order: list[str], tolerances: dict[str, Any], step: Progress
) -> dict[str, Any]:
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


def ensure_variant(
    paths: ArtifactPaths, info: dict[str, Any], component: str, precision: str, tolerances: dict[str, Any], step: Progress
) -> dict[str, Any]:
    """Write and gate one variant unless its record says it was made from these very inputs."""
    source, reference = paths.onnx(component, "opt"), paths.onnx(component)
    inputs = {"source": sha256_file(source), "reference": sha256_file(reference)}
    settings = {
        "keep_fp32_ops": list(KEEP_FP32_OPS),
        "data_max": DATA_MAX,
        "gate_shape": "min",
        "thresholds": _thresholds(tolerances, component, precision, stage_of(info, component)),
    }
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
        model, fill = convert(source, precision, feeds, Path(tmp))
        save_graph(model, staged, fill)
        del model, fill  # the converter (held by fill) and its graphs, before the gate loads two sessions
        gate = gate_variant(staged, reference, precision, feeds, settings["thresholds"])
        if gate["passed"]:
            _publish(staged, out)
        else:
            _remove_variant(paths, component, precision, keep_record=True)
    record = {
        "version": RECORD_VERSION,
        "component": component,
        "precision": precision,
        "file": out.name if gate["passed"] else None,
        "inputs": inputs,
        "settings": settings,
        "gate": gate,
    }
    write_json(record_file, record)
    return record


def stage_of(info: dict[str, Any], component: str) -> str:
    """The runtime stage a component belongs to (a streaming VAE's next graph is the vae_decoder stage's), from export.json."""
    from t2vtrt.runtime.manifest import component_stages

    return component_stages(components_of(info), ["denoiser"], info.get("latent") or {})[component]


def _thresholds(tolerances: dict[str, Any], component: str, precision: str, stage: str) -> dict[str, float]:
    """[graph.<component>.<precision>], else its stage's; a variant without either is never used."""
    from t2vtrt.build.compare.tolerances import graph_thresholds

    found = graph_thresholds(tolerances, component, precision, stage)
    if found is None:
        raise T2VError(
            f"no thresholds for {component} {precision} in the tolerances file: measure it and add "
            f"[graph.{component}.{precision}] to build/compare/tolerances.toml"
        )
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
        return tuple(TensorSpec(t["name"], t["dtype"], tuple(t["shape"]), tuple(t["value_range"]) if "value_range" in t else None) for t in entries)

    return ComponentSpec(name, tensors(data["inputs"]), tensors(data["outputs"]), {k: tuple(v) for k, v in data["axes"].items()})


def convert(source: Path, precision: str, feeds: list[dict[str, np.ndarray]], work: Path) -> tuple[Any, WeightFill]:
    """_convert inside `work`: ModelOpt's steps drop files named after graph outputs in the current directory."""
    source, work = Path(source).resolve(), Path(work).resolve()
    with contextlib.chdir(work):
        return _convert(source, precision, feeds, work)


def _convert(source: Path, precision: str, feeds: list[dict[str, np.ndarray]], work: Path) -> tuple[Any, WeightFill]:
    """ModelOpt AutoCast of `source` to `precision`, FP32 I/O, measured on the first of `feeds`; weights stay on disk.

    AutoCast's own steps (sanitize, classify, convert) run on the graph with its large weights as 1-byte
    placeholders; its reference run and its initializer-range rule are done here (the same figures, |max| of
    every tensor and of every FP32 weight, measured without holding them all). AutoCast is told to cast every
    weight at run time; those Casts are folded back into low-precision weights that `save_graph` converts
    one at a time with AutoCast's own conversion (its clamping included). Returns the model and that fill.
    A graph saved in one file first has its weights moved to `work` (inside source's folder: ONNX Runtime
    reads external data only below the graph's folder).
    """
    import modelopt.onnx.autocast.convert as autocast
    import modelopt.onnx.autocast.utils as ac_utils
    import modelopt.onnx.utils as onnx_utils
    from modelopt.onnx.autocast.graphsanitizer import GraphSanitizer
    from modelopt.onnx.autocast.nodeclassifier import NodeClassifier
    from modelopt.onnx.autocast.precisionconverter import PrecisionConverter

    from t2vtrt.build.graphfiles import externalize, load_graph

    quiet_modelopt()
    model = externalize(load_graph(source), work / "weights.bin")
    io_metadata = autocast._capture_network_io_metadata(model, True)
    sanitizer = GraphSanitizer(
        model,
        22 if precision == "bf16" else 13,
        trt_plugins=[],
        trt_plugins_precision=[],
        max_ir_version=autocast.LATEST_IR_VERSION_SUPPORTED_BY_ORT,
        onnx_path=str(source),
    )
    sanitizer.sanitize()
    model = onnx_utils.infer_types(sanitizer.model, False, strict_mode=True)
    stats = reference_stats(model, source, feeds[0])
    keep = _InitializerRange(_overflowing_nodes(ac_utils.setup_mappings(model)[2], autocast.DEFAULT_INIT_MAX))
    _to_placeholders(model)
    value_info_map, initializer_map, node_to_init = ac_utils.setup_mappings(model)
    classifier = NodeClassifier(
        model,
        node_to_init,
        initializer_map,
        op_types_to_exclude=list(KEEP_FP32_OPS),
        data_max=DATA_MAX,
        init_max=None,
        custom_rule=keep,
        custom_ops_low_precision_nodes=sanitizer.custom_ops_low_precision_nodes or [],
    )
    # init_conversion_max_bytes=0: every weight gets a run-time Cast instead of being read (folded below).
    converter = PrecisionConverter(
        model,
        value_info_map,
        initializer_map,
        node_to_init,
        keep_io_types=True,
        low_precision_type=precision,
        init_conversion_max_bytes=0,
        custom_ops=sanitizer.custom_ops,
        original_network_io_metadata=io_metadata,
        sanitize_model=False,
    )
    casts_before = {n.name for n in model.graph.node if n.op_type == "Cast"}
    _linear_dead_node_cleanup(converter)
    low, high = classifier.run(stats)
    converted = converter.convert(high, low)
    convert_one = _conversion(converter)
    _fold_weight_casts(converted, casts_before, convert_one)
    # AutoCast leaves value_info with the calibration shapes baked in; ONNX Runtime then rejects other shapes.
    del converted.graph.value_info[:]
    return converted, _weight_fill(convert_one)


def quiet_modelopt() -> None:
    """Only errors from ModelOpt's loggers: its per-node INFO lines (over a thousand per real-size graph) and routine
    per-graph warnings would bury our progress. Its logging modules set their loggers' levels when imported, so they
    are imported first; AutoCast's modules, imported later, take the level set here."""
    import logging

    import modelopt.onnx.autocast.logging_config  # noqa: F401
    import modelopt.onnx.logging_config  # noqa: F401

    for name in ("modelopt", "modelopt.onnx", "modelopt.onnx.autocast"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _linear_dead_node_cleanup(converter: Any) -> None:
    """Swap ModelOpt 0.47's O(nodes^2) dead-node cleanup for an O(nodes) one that removes the same nodes.

    PrecisionConverter._cleanup_no_consumer_nodes finds each node's readers by scanning the whole graph: over
    10 minutes on the real-size denoiser's Q/DQ graph (about 9,000 nodes). This removes the same nodes, those
    whose outputs nobody reads and which are not graph outputs, found from one set of reads taken before removal.
    """

    def cleanup() -> None:
        read = {name for node in converter.model.graph.node for name in node.input} | {o.name for o in converter.model.graph.output}
        for node in [n for n in converter.model.graph.node if not any(out in read for out in n.output)]:
            converter.model.graph.node.remove(node)

    if hasattr(converter, "_cleanup_no_consumer_nodes"):
        converter._cleanup_no_consumer_nodes = cleanup


def reference_stats(model: Any, source: Path, feed: dict[str, np.ndarray]) -> dict[str, Any]:
    """AutoCast's reference figures (|max| and size of every tensor) from one FP32 run on `feed`.

    AutoCast makes every tensor a graph output, so ONNX Runtime keeps all of them alive at once; here each
    is reduced to its |max| and element count inside the run (run in node order: 2.4 GB instead of 14.1 GB on a
    1.4 GB denoiser, docs/benchmarks.md), and only those scalars come out.
    """
    import onnx
    from modelopt.onnx.autocast.referencerunner import TensorStats
    from onnx import TensorProto, helper

    from t2vtrt.build.graphfiles import run_probe

    ref = onnx.ModelProto()
    ref.CopyFrom(model)  # weights are references to their files: a small copy
    graph = ref.graph
    types = {v.name: v.type.tensor_type.elem_type for v in (*graph.value_info, *graph.output)}
    del graph.value_info[:]
    nodes, wanted = [], {}
    for node in graph.node:
        nodes.append(node)
        for name in node.output:
            if not name or types.get(name, TensorProto.UNDEFINED) in (TensorProto.UNDEFINED, TensorProto.BOOL, TensorProto.STRING):
                continue  # a bool is never out of range; an untyped tensor cannot be reduced
            absmax, size = f"{name}/t2vtrt_absmax", f"{name}/t2vtrt_size"
            nodes += [
                helper.make_node("Abs", [name], [f"{name}/t2vtrt_abs"]),
                helper.make_node("ReduceMax", [f"{name}/t2vtrt_abs"], [absmax], keepdims=0),
                helper.make_node("Size", [name], [size]),
            ]
            graph.output.extend([helper.make_tensor_value_info(absmax, types[name], []), helper.make_tensor_value_info(size, TensorProto.INT64, [])])
            wanted[name] = (absmax, size)
    del graph.node[:]
    graph.node.extend(nodes)
    values = run_probe(ref, source, feed, "reference")
    stats = {
        name: TensorStats(float(np.max(np.abs(v))) if v.size else 0.0, float(v.min()) if v.size else 0.0, float(v.max()) if v.size else 0.0, v.shape)
        for name, v in feed.items()
    }
    for name, (absmax, size) in wanted.items():
        count = int(values[size])
        # min/max are not measured (AutoCast only logs them); |max| and size are what its rule decides on.
        stats[name] = TensorStats(float(values[absmax]) if count else 0.0, math.nan, math.nan, (count,))
    return stats


WeightFill = Callable[[Any], "bytes | None"]
ConvertOne = Callable[[Any, int], bytes]
# A placeholder weight: 1 byte of data; where its FP32 bytes are, and the type to convert them to, in doc_string.
_PLACEHOLDER = "t2vtrt-weight"


class _InitializerRange:
    """AutoCast's initializer-range rule from figures measured one weight at a time: these nodes stay FP32."""

    def __init__(self, nodes: set[str]) -> None:
        self.nodes = nodes

    def check(self, node: Any) -> bool:
        """True when the node reads an FP32 weight beyond the low precision's range."""
        return node.name in self.nodes


def _overflowing_nodes(node_to_init: dict[str, list[Any]], init_max: float) -> set[str]:
    """Nodes reading an FP32 initializer with |value| > init_max (each weight read once, one at a time)."""
    from onnx import TensorProto

    from t2vtrt.build.graphfiles import read_array

    over: dict[str, bool] = {}
    for inits in node_to_init.values():
        for init in inits:
            if init.data_type == TensorProto.FLOAT and init.name not in over:
                values = read_array(init)
                over[init.name] = bool(values.size) and bool(np.any(np.abs(values) > init_max))
    return {node for node, inits in node_to_init.items() if any(over.get(i.name) for i in inits)}


def _to_placeholders(model: Any) -> None:
    """Swap every weight still on disk for a 1-byte placeholder that records where its bytes are."""
    from t2vtrt.build.graphfiles import external_ref, is_external

    for init in model.graph.initializer:
        if is_external(init):
            file, offset, length = external_ref(init)
            init.doc_string = json.dumps({"kind": _PLACEHOLDER, "file": str(file), "offset": offset, "length": length, "to": None})
            del init.external_data[:]
            init.ClearField("data_location")
            # Non-empty raw data longer than init_conversion_max_bytes=0: AutoCast casts it at run time, unread.
            init.raw_data = b"\0"


def _placeholder(init: Any) -> dict[str, Any] | None:
    """The placeholder record of an initializer, or None for a real one."""
    if not init.doc_string.startswith("{"):
        return None
    record = json.loads(init.doc_string)
    return record if record.get("kind") == _PLACEHOLDER else None


def _conversion(converter: Any) -> ConvertOne:
    """AutoCast's conversion of one FP32 initializer to FP16 / BF16 (its clamping included), as raw bytes."""
    from modelopt.onnx.autocast.precisionconverter import PRECISION_MAP
    from onnx import TensorProto

    def convert_one(fp32: Any, to: int) -> bytes:
        target = PRECISION_MAP["bf16" if to == TensorProto.BFLOAT16 else "fp16"]
        return converter._convert_initializer_data(fp32, PRECISION_MAP["fp32"], target).raw_data

    return convert_one


def _weight_fill(convert_one: ConvertOne) -> WeightFill:
    """The bytes of a placeholder weight as it is written: copied from its file, or read and converted."""
    from onnx import TensorProto

    from t2vtrt.build.graphfiles import read_bytes

    def fill(init: Any) -> bytes | None:
        record = _placeholder(init)
        if record is None:
            return None
        ref = TensorProto(
            name=init.name, dims=list(init.dims), data_location=TensorProto.EXTERNAL, data_type=TensorProto.FLOAT if record["to"] else init.data_type
        )
        for key in ("file", "offset", "length"):
            ref.external_data.add(key="location" if key == "file" else key, value=str(record[key]))
        data = read_bytes(ref)
        if record["to"] is None:
            return data
        fp32 = TensorProto(name=init.name, dims=list(init.dims), data_type=TensorProto.FLOAT, raw_data=data)
        del data
        return convert_one(fp32, record["to"])

    return fill


def _fold_weight_casts(model: Any, casts_before: set[str], convert_one: ConvertOne) -> int:
    """Replace each Cast AutoCast added after an FP32 weight by the converted weight; return how many."""
    from onnx import TensorProto

    inits = {init.name: init for init in model.graph.initializer}
    folded = []
    for node in model.graph.node:
        if node.op_type != "Cast" or node.name in casts_before or node.input[0] not in inits:
            continue
        source, to = inits[node.input[0]], next(a.i for a in node.attribute if a.name == "to")
        if source.data_type != TensorProto.FLOAT or to not in (TensorProto.FLOAT16, TensorProto.BFLOAT16):
            continue
        weight = TensorProto(name=node.output[0], dims=list(source.dims), data_type=to)
        record = _placeholder(source)
        if record is None:  # a weight held in the graph (small, or a graph without external data): convert it now
            weight.raw_data = convert_one(source, to)
        else:
            weight.doc_string = json.dumps({**record, "to": to})
            weight.raw_data = b"\0"
        folded.append((node, weight))
    for node, weight in folded:
        model.graph.node.remove(node)
        model.graph.initializer.append(weight)
    read = {name for n in model.graph.node for name in n.input} | {o.name for o in model.graph.output}
    for init in [i for i in model.graph.initializer if i.name not in read]:
        model.graph.initializer.remove(init)  # a weight only the folded Casts read
    return len(folded)


def save_graph(model: Any, path: Path, fill: WeightFill | None = None) -> None:
    """Save a graph; past graphfiles' EXTERNAL_DATA_BYTES of weights, into one <graph>.onnx.data file beside it.

    `fill` gives the bytes of placeholder weights (copied or converted as they are written)."""
    from t2vtrt.build import graphfiles

    placeholders = [_placeholder(t) for t in model.graph.initializer]
    weights = graphfiles.weight_bytes(model) + sum(r["length"] // (2 if r["to"] else 1) for r in placeholders if r)
    graphfiles.save_graph(model, path, external=weights >= graphfiles.EXTERNAL_DATA_BYTES, fill=fill)


def _publish(staged: Path, out: Path) -> None:
    """Rename the gated graph (weights first, so a graph never precedes its data) into place."""
    data = staged.with_name(staged.name + ".data")
    if data.is_file():
        os.replace(data, out.with_name(out.name + ".data"))
    else:
        out.with_name(out.name + ".data").unlink(missing_ok=True)
    os.replace(staged, out)


# --------------------------------------------------------------------------- the gate


def gate_variant(
    candidate: Path, reference: Path, precision: str, feeds: list[dict[str, np.ndarray]], thresholds: dict[str, float]
) -> dict[str, Any]:
    """Run both graphs on `feeds`; the worst metrics per output against `thresholds` (NaN/Inf fail)."""
    from t2vtrt.build.compare.gates import Check, gate_graph
    from t2vtrt.build.compare.metrics import worst

    runnable = emulated(candidate, candidate.with_name("emulated." + candidate.name)) if precision == "bf16" else candidate
    ref_outputs = run_graph(reference, feeds)
    got_outputs = run_graph(runnable, feeds)
    iterations = [{name: metrics(got[name], ref[name]) for name in ref} for got, ref in zip(got_outputs, ref_outputs)]
    nonfinite = {name: int(sum(np.count_nonzero(~np.isfinite(g[name])) for g in got_outputs)) for name in ref_outputs[0]}
    check = gate_graph(Check("graph", f"{candidate.name.split('.')[0]} {precision}", precision), worst(iterations), nonfinite, thresholds)
    return {
        "passed": not check.failures,
        "metrics": check.metrics,
        "failures": check.failures,
        "nonfinite": sum(nonfinite.values()),
        "feeds": len(feeds),
        "emulated": precision == "bf16",
    }


def metrics(got: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """compare's four figures: relative L2, max |diff|, cosine, PSNR (peak = max of the reference, capped at PSNR_CAP_DB)."""
    from t2vtrt.build.compare.metrics import PSNR_CAP_DB

    got64, ref64 = got.astype(np.float64).ravel(), ref.astype(np.float64).ravel()
    diff = got64 - ref64
    ref_norm, got_norm = float(np.linalg.norm(ref64)), float(np.linalg.norm(got64))
    mse = float(np.mean(diff**2)) if np.isfinite(diff).all() else math.inf
    peak = float(np.max(ref64))
    psnr = PSNR_CAP_DB if mse == 0 else (10 * math.log10(peak**2 / mse) if peak > 0 and math.isfinite(mse) else -math.inf)
    return {
        "rel_l2": float(np.linalg.norm(diff)) / ref_norm if ref_norm > 0 else math.inf,
        "max_abs": float(np.max(np.abs(diff))),
        "cosine": float(got64 @ ref64) / (got_norm * ref_norm) if got_norm * ref_norm > 0 else 0.0,
        "psnr": min(psnr, PSNR_CAP_DB),
    }


def run_graph(path: Path, feeds: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """Outputs of a graph in ONNX Runtime's CPU provider, one dict per feed.

    The CPU on every machine: the FP16/BF16 gate thresholds (build/compare/tolerances.toml) were measured with its kernels,
    which compute FP16 in FP32 between rounded inputs; CUDA's FP16 kernels would give other figures to gate.
    """
    import onnxruntime as ort

    from t2vtrt.build.heap import release_freed_memory
    from t2vtrt.runtime.backends.onnxruntime import new_session

    release_freed_memory()  # freed heap of the sessions before it (the gate runs two) goes back before this one loads
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = new_session(str(path), options, device="cpu")
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
        for name in node.output:
            if name in bf16:  # compute in FP32, store as BF16: round through a Cast pair
                rounded = f"{name}__bf16"
                node.output[list(node.output).index(name)] = rounded
                nodes += [
                    helper.make_node("Cast", [rounded], [f"{name}__q"], to=TensorProto.BFLOAT16),
                    helper.make_node("Cast", [f"{name}__q"], [name], to=TensorProto.FLOAT),
                ]
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
    return {v.name for v in (*inferred.graph.value_info, *inferred.graph.output) if v.type.tensor_type.elem_type == TensorProto.BFLOAT16}


def _bf16_to_float(tensor: Any) -> np.ndarray:
    """A BF16 initializer's values as float32 (BF16 is the top half of a float32)."""
    # raw bits are read directly: numpy has no bfloat16 dtype
    raw = np.frombuffer(tensor.raw_data, dtype=np.uint16) if tensor.raw_data else np.asarray(tensor.int32_data, dtype=np.uint16)
    return (raw.astype(np.uint32) << 16).view(np.float32).reshape(tuple(tensor.dims))
