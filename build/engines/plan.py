"""The build plan for a GPU profile: what each engine is built from, with which profile and settings,
and whether it fits the GPU's memory (docs/architecture.md#engines; issue: per-GPU TensorRT engines).

The VRAM estimate is computed from the ONNX graphs alone (no GPU, no TensorRT):
- weights: every initializer, at fp32, fp16 and int8 (the Q/DQ graph's real sizes when it exists);
- activations: the peak of live intermediate tensors in topological order at the profile's max
  shape (shapes from symbolic shape inference) - the estimate of an engine's context memory;
  attention score tensors are left out for fp16/int8 graphs because TensorRT fuses
  MatMul-Softmax-MatMul into one kernel there;
- I/O buffers the runtime allocates at the max shape;
- resident = every engine loaded at once; --low-vram = one stage at a time (the largest stage).
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from t2vtrt.build.artifacts import COMPONENTS, ArtifactPaths, read_export_info
from t2vtrt.build.families.spec import Range, ShapeRanges, resolve_shape
from t2vtrt.build.gpus.profiles import GpuProfile
from t2vtrt.runtime.errors import T2VError

GIB = 1 << 30
MIB = 1 << 20
MIN_WORKSPACE = 256 * MIB
SMALL_EXTERNAL_BYTES = 64 << 10  # external initializers read for shape inference (shape constants)
# ONNX TensorProto data type -> bytes per element (4-bit types count half a byte).
DTYPE_BYTES = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 16: 2,
               17: 1, 18: 1, 19: 1, 20: 1, 21: 0.5, 22: 0.5, 23: 0.5}
FLOAT_TYPES = {1: "fp32", 10: "fp16", 11: "fp64", 16: "bf16"}
WEIGHT_OPS = {"Conv": (1,), "ConvTranspose": (1,), "MatMul": (0, 1), "Gemm": (0, 1)}
ALIAS_OPS = {"Identity", "Transpose", "Cast"}  # a weight passed through these is still that weight
QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}
SCORE_PATH_OPS = {"Mul", "Div", "Add", "Sub", "Cast", "Where", "QuantizeLinear", "DequantizeLinear"}  # QK MatMul .. Softmax
PROB_PATH_OPS = {"Cast", "QuantizeLinear", "DequantizeLinear"}  # between Softmax and the P.V MatMul (AutoCast, Q/DQ)
# Graph variants the TensorRT target builds, besides the patched graph onnx/<component>.opt.onnx.
EXTRA_KINDS = ("fp16", "bf16", "int8", "fp8")
PREFERENCE = ("int8", "fp8", "fp16", "bf16", "fp32")  # the default precision: the lowest one built


# --------------------------------------------------------------------------- graph analysis


@dataclass(frozen=True)
class GraphStats:
    """What one ONNX graph costs on a GPU at one input shape."""

    weights: dict[str, int]  # bytes: as built ("engine") and at fp32 / fp16 / int8
    activation_bytes: int  # peak live intermediates: the engine's context memory
    io_bytes: int  # graph inputs + outputs at these shapes
    fused_attention_bytes: int  # attention scores TensorRT does not materialise (not counted)
    unknown_shapes: int  # intermediates whose shape inference failed (estimated from inputs)
    precision: str  # fp32 | fp16 | bf16 | int8 as the graph says
    guessed: tuple[str, ...] = ()  # the first few tensors whose size was guessed


def load_graph(path: Path) -> Any:
    """The ONNX model without its large external weights (sizes come from dims); small ones are read.

    Exporters put every initializer of a > 2 GB graph in external data, Reshape targets and other
    shape constants included; shape inference needs their values, so those (a few KiB) are loaded.
    """
    import onnx

    if not path.is_file():
        raise T2VError(f"{path} is missing: run `t2vtrt surgery` (or `make engines`) first")
    model = onnx.load(str(path), load_external_data=False)
    _load_small_external(model, path.parent)
    return model


def _load_small_external(model: Any, base_dir: Path) -> None:
    """Read the values of external initializers below SMALL_EXTERNAL_BYTES (shape constants, scalars)."""
    from onnx.external_data_helper import load_external_data_for_tensor

    for tensor in model.graph.initializer:
        if tensor.data_location != 1:  # onnx.TensorProto.EXTERNAL
            continue
        size = _numel(tensor.dims) * DTYPE_BYTES.get(tensor.data_type, 4)
        if size <= SMALL_EXTERNAL_BYTES:
            try:
                load_external_data_for_tensor(tensor, str(base_dir))
            except Exception:  # noqa: BLE001 - a missing weights file is reported by the stage that copies it
                continue
            tensor.data_location = 0
            del tensor.external_data[:]


def _numel(dims: Any) -> int:
    """Elements of a tensor with these dims."""
    count = 1
    for d in dims:
        count *= int(d)
    return count


def _weights(model: Any) -> dict[str, tuple[int, int]]:
    """Initializers and Constant tensors: name -> (elements, ONNX dtype)."""
    tensors = {t.name: (_numel(t.dims), t.data_type) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and attr.t is not None:
                    tensors[node.output[0]] = (_numel(attr.t.dims), attr.t.data_type)
    return tensors


def _aliases(model: Any, weights: dict[str, Any]) -> dict[str, str]:
    """Tensor -> the weight it is (through Identity/Transpose/Cast chains, as torch exports shared weights)."""
    alias = {name: name for name in weights}
    for node in model.graph.node:
        if node.op_type in ALIAS_OPS and node.input and node.input[0] in alias:
            alias[node.output[0]] = alias[node.input[0]]
    return alias


def weight_bytes(model: Any) -> dict[str, int]:
    """Weight bytes as built and at each precision: int8 counts GEMM/conv weights at 1 byte, the rest at fp16."""
    weights = _weights(model)
    alias = _aliases(model, weights)
    quantizable, quantized = set(), set()
    for node in model.graph.node:
        for index in WEIGHT_OPS.get(node.op_type, ()):
            if index < len(node.input) and node.input[index] in alias:
                quantizable.add(alias[node.input[index]])
        if node.op_type in QDQ_OPS and node.input and node.input[0] in alias:
            quantized.add(alias[node.input[0]])
    out = {"engine": 0, "fp32": 0, "fp16": 0, "int8": 0}
    for name, (count, dtype) in weights.items():
        size = DTYPE_BYTES.get(dtype, 4)
        floating = dtype in FLOAT_TYPES
        # TensorRT stores a weight that feeds QuantizeLinear as int8 in the engine.
        out["engine"] += int(count * (1 if name in quantized and floating else size))
        out["fp32"] += int(count * (4 if floating else size))
        out["fp16"] += int(count * (2 if floating else size))
        out["int8"] += int(count * (1 if (name in quantizable or name in quantized) and floating else 2 if floating else size))
    return out


def graph_precision(model: Any) -> str:
    """int8 when the graph has Q/DQ nodes, else the dtype holding most float weight bytes."""
    if any(node.op_type in QDQ_OPS for node in model.graph.node):
        return "int8"
    totals: dict[str, int] = {}
    for count, dtype in _weights(model).values():
        if dtype in FLOAT_TYPES:
            totals[FLOAT_TYPES[dtype]] = totals.get(FLOAT_TYPES[dtype], 0) + count
    best = max(totals, key=totals.get) if totals else "fp32"  # type: ignore[arg-type]
    return "fp32" if best == "fp64" else best


def _with_input_shapes(model: Any, shapes: dict[str, tuple[int, ...]]) -> Any:
    """A copy whose graph inputs have these concrete shapes."""
    import onnx

    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    # Shapes recorded at export are symbolic; inference must recompute them from the concrete inputs.
    del fixed.graph.value_info[:]
    for value in fixed.graph.input:
        if value.name in shapes:
            for dim, size in zip(value.type.tensor_type.shape.dim, shapes[value.name]):
                dim.ClearField("dim_param")
                dim.dim_value = int(size)
    return fixed


def _infer(model: Any) -> Any:
    """Shape-inferred model: ONNX Runtime's symbolic inference (resolves reshapes), else onnx's."""
    import onnx

    for prepare in (lambda m: m, _flat_gathers):
        try:
            from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

            return SymbolicShapeInference.infer_shapes(prepare(model), auto_merge=True)
        except Exception:  # noqa: BLE001, S112 - try the next way; onnx's own inference is the last resort
            continue
    return onnx.shape_inference.infer_shapes(model, data_prop=True)


def _flat_gathers(model: Any) -> Any:
    """A copy where Gather(1-D data, constant N-D indices) is Gather(flat indices) + Reshape.

    Same shapes; ONNX Runtime's symbolic inference fails on the original form, which the
    OneHot->Gather surgery pass writes.
    """
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in onnx.shape_inference.infer_shapes(model).graph.value_info
             if v.type.tensor_type.HasField("shape")}
    inits = {t.name: t for t in model.graph.initializer}
    out = onnx.ModelProto()
    out.CopyFrom(model)
    nodes = []
    for node in out.graph.node:
        index = inits.get(node.input[1]) if node.op_type == "Gather" else None
        if index is None or len(index.dims) < 2 or ranks.get(node.input[0]) != 1:
            nodes.append(node)
            continue
        values = numpy_helper.to_array(index)
        flat, shape = f"{node.output[0]}__flat_index", f"{node.output[0]}__index_shape"
        out.graph.initializer.extend([numpy_helper.from_array(values.reshape(-1), flat),
                                      numpy_helper.from_array(np.array(values.shape, np.int64), shape)])
        nodes += [helper.make_node("Gather", [node.input[0], flat], [f"{node.output[0]}__flat"], axis=0),
                  helper.make_node("Reshape", [f"{node.output[0]}__flat", shape], [node.output[0]])]
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out


def tensor_sizes(model: Any, shapes: dict[str, tuple[int, ...]]) -> dict[str, int | None]:
    """Bytes of every graph input, output and intermediate at these input shapes (None: unknown)."""
    inferred = _infer(_with_input_shapes(model, shapes))
    sizes: dict[str, int | None] = {}
    graph = inferred.graph
    for value in (*graph.input, *graph.value_info, *graph.output):
        tensor = value.type.tensor_type
        dims = tensor.shape.dim if tensor.HasField("shape") else None
        known = dims is not None and all(d.HasField("dim_value") for d in dims)
        sizes[value.name] = int(_numel(d.dim_value for d in dims) * DTYPE_BYTES.get(tensor.elem_type, 4)) if known else None
    return sizes


def attention_scores(model: Any) -> set[str]:
    """Tensors between a Q.K^T MatMul, its Softmax, and the P.V MatMul (through casts and Q/DQ): what MHA fusion never writes."""
    producer = {out: node for node in model.graph.node for out in node.output}
    consumers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    scores: set[str] = set()
    for node in model.graph.node:
        if node.op_type != "Softmax":
            continue
        path, tensor = [], node.input[0]
        while tensor in producer and producer[tensor].op_type in SCORE_PATH_OPS:
            path.append(tensor)
            tensor = producer[tensor].input[0]
        probs = _probability_path(node.output[0], consumers)
        if tensor in producer and producer[tensor].op_type == "MatMul" and probs:
            scores.update([tensor, *path, *probs])
    return scores


def _probability_path(softmax_out: str, consumers: dict[str, list[Any]]) -> list[str]:
    """The Softmax output and the casts / Q-DQ after it when they end in a MatMul; [] otherwise."""
    path, tensor = [softmax_out], softmax_out
    while True:
        users = consumers.get(tensor, [])
        if users and all(u.op_type == "MatMul" for u in users):
            return path
        if len(users) != 1 or users[0].op_type not in PROB_PATH_OPS:
            return []
        tensor = users[0].output[0]
        path.append(tensor)


def activation_peak(model: Any, sizes: dict[str, int | None], skip: set[str]) -> tuple[int, int]:
    """(peak bytes of live intermediates in node order, count of unknown sizes estimated)."""
    graph = model.graph
    outside = {v.name for v in (*graph.input, *graph.output)} | {t.name for t in graph.initializer}
    last_use: dict[str, int] = {}
    for index, node in enumerate(graph.node):
        for name in node.input:
            last_use[name] = index
    live: dict[str, int] = {}
    peak = unknown = 0
    for index, node in enumerate(graph.node):
        if node.op_type == "Constant":
            continue  # constants are weights, counted there
        for name in node.output:
            if not name or name in outside or name in skip:
                continue
            size = sizes.get(name)
            if size is None:  # unknown shape: as large as the node's largest known input
                unknown += 1
                size = max((sizes.get(i) or 0 for i in node.input), default=0)
            live[name] = size
        peak = max(peak, sum(live.values()))
        for name in [n for n in live if last_use.get(n, -1) <= index]:
            del live[name]
    return peak, unknown


@lru_cache(maxsize=64)
def _analyze_cached(path: str, stamp: tuple[int, int], shapes: tuple[tuple[str, tuple[int, ...]], ...]) -> GraphStats:
    """analyze_graph, cached per file version and shape (the plan is computed often in one process)."""
    model = load_graph(Path(path))
    precision = graph_precision(model)
    sizes = tensor_sizes(model, dict(shapes))
    scores = attention_scores(model) if precision != "fp32" else set()
    peak, unknown = activation_peak(model, sizes, scores)
    io = sum(sizes.get(v.name) or 0 for v in (*model.graph.input, *model.graph.output))
    produced = [out for node in model.graph.node if node.op_type != "Constant" for out in node.output if out]
    guessed = tuple(name for name in produced if sizes.get(name) is None)[:5]
    return GraphStats(weight_bytes(model), peak, io, sum(sizes.get(s) or 0 for s in scores), unknown, precision, guessed)


def analyze_graph(path: Path, shapes: dict[str, tuple[int, ...]]) -> GraphStats:
    """Weights, activations and I/O of a graph at these input shapes."""
    stat = path.stat() if path.is_file() else None
    if stat is None:
        raise T2VError(f"{path} is missing: run `t2vtrt surgery` (or `make engines`) first")
    key = tuple(sorted((k, tuple(int(x) for x in v)) for k, v in shapes.items()))
    return _analyze_cached(str(path), (stat.st_mtime_ns, stat.st_size), key)


# --------------------------------------------------------------------------- shapes


def effective_ranges(model: ShapeRanges, gpu: ShapeRanges | None) -> ShapeRanges:
    """The GPU profile's ranges intersected with the model's; the model's own range where they do not meet."""
    if gpu is None:
        return model
    return ShapeRanges(**{axis: _intersect(getattr(model, axis), getattr(gpu, axis)) for axis in ("batch", "frames", "height", "width")})


def _intersect(model: Range, gpu: Range) -> Range:
    """[max(mins), opt, min(maxes)], or the model's range when they are disjoint."""
    lo, hi = max(model[0], gpu[0]), min(model[2], gpu[2])
    if lo > hi:
        return model
    opt = gpu[1] if lo <= gpu[1] <= hi else min(max(model[1], lo), hi)
    return (lo, opt, hi)


def component_specs_for(info: dict[str, Any], ranges: ShapeRanges) -> dict[str, dict[str, Any]] | None:
    """The manifest's component entries for other ranges than the export's; None when export.json cannot say."""
    if ShapeRanges.from_json(info["ranges"]) == ranges:
        return info["components"]
    if "config" not in info:
        return None  # an export.json without the family config: keep the exported ranges
    from t2vtrt.build.families import get_family
    from t2vtrt.build.families.spec import LatentLayout, LoadedModel, SchedulerInfo

    sched, latent, tok = info["scheduler"], info["latent"], info["tokenizer"]
    stub = LoadedModel(
        family=info["model"]["family"],
        modules={},
        tokenizer_file=tok["file"],
        tokenizer_max_length=tok["max_length"],
        tokenizer_pad_id=tok["pad_id"],
        scheduler=SchedulerInfo(sched["prediction_type"], sched["config"], tuple(sched["samplers"]), sched["default_sampler"]),
        latent=LatentLayout(latent["channels"], latent["spatial_factor"], latent["temporal_factor"], latent["vae_decode"]),
        config=info["config"],
    )
    specs = get_family(stub.family).component_specs(stub, ranges)
    return {name: spec.to_json() for name, spec in specs.items()}


def input_profiles(spec: dict[str, Any]) -> dict[str, list[list[int]]]:
    """Per input: its [min, opt, max] shapes (the TensorRT optimization profile)."""
    axes = spec["axes"]
    return {
        t["name"]: [list(resolve_shape(tuple(t["shape"]), {a: r[i] for a, r in axes.items()})) for i in range(3)]
        for t in spec["inputs"]
    }


# --------------------------------------------------------------------------- the plan


@dataclass
class VariantPlan:
    """One engine to build: a component at one precision."""

    precision: str
    source: Path  # the TensorRT-ready ONNX graph
    engine: str  # file name in engines/<gpu>/
    stats: GraphStats

    def to_json(self, root: Path) -> dict[str, Any]:
        """The plan's record (paths relative to artifacts/<model>)."""
        return {"precision": self.precision, "source": _relative(self.source, root), "engine": self.engine,
                "weights_bytes": self.stats.weights["engine"]}


@dataclass
class ComponentPlan:
    """One component: its manifest entry, optimization profile, and the engines built for it."""

    name: str
    spec: dict[str, Any]
    shapes: dict[str, list[list[int]]]
    variants: dict[str, VariantPlan]
    runtime_precision: str  # what the runtime opens by default (the manifest's fallback rule)

    @property
    def stats(self) -> GraphStats:
        """The analysis of the variant the runtime runs."""
        return self.variants[self.runtime_precision].stats

    def need(self, scale: float = 1.0) -> int:
        """Device bytes while this component runs: weights + context memory + I/O buffers."""
        s = self.stats
        return int(s.weights["engine"] + scale * (s.activation_bytes + s.io_bytes))

    def to_json(self, root: Path) -> dict[str, Any]:
        """The plan's record."""
        s = self.stats
        return {
            "profile": self.shapes,
            "runtime_precision": self.runtime_precision,
            "variants": {p: v.to_json(root) for p, v in self.variants.items()},
            "weights_bytes_at": {k: v for k, v in s.weights.items() if k != "engine"},
            "weights_bytes": s.weights["engine"],
            "activation_bytes": s.activation_bytes,
            "io_bytes": s.io_bytes,
            "fused_attention_bytes": s.fused_attention_bytes,
            "unknown_shapes": s.unknown_shapes,
        }


@dataclass
class VramPlan:
    """Whether the engines fit the GPU, in which mode, and what would fit otherwise."""

    total: int
    reserve: int
    resident: int
    low_vram: int
    build: int
    workspace: int
    largest_context: int
    mode: str  # resident | low_vram
    alternatives: list[str] = field(default_factory=list)

    @property
    def required(self) -> int:
        """Bytes the chosen mode needs, reserve included."""
        return (self.low_vram if self.mode == "low_vram" else self.resident) + self.reserve

    @property
    def fits(self) -> bool:
        """True when the chosen mode fits the profile's VRAM."""
        return self.required <= self.total

    def to_json(self) -> dict[str, Any]:
        """The plan's record, in bytes and GiB."""
        data = dict(self.__dict__)
        data.update(required=self.required, fits=self.fits, gib={k: round(v / GIB, 3) for k, v in
                    (("total", self.total), ("required", self.required), ("resident", self.resident),
                     ("low_vram", self.low_vram), ("build", self.build))})
        return data


@dataclass
class BuildPlan:
    """Everything `t2vtrt engines --gpu NAME` will do, written to engines/<gpu>/plan.json."""

    target: str
    profile: GpuProfile
    root: Path  # artifacts/<model>
    info: dict[str, Any]
    ranges: ShapeRanges
    components: dict[str, ComponentPlan]
    builder: dict[str, Any]
    vram: VramPlan
    default_precision: str
    tensorrt_version: str | None
    notes: list[str] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        """The chosen mode fits the GPU."""
        return self.vram.fits

    def to_json(self) -> dict[str, Any]:
        """plan.json."""
        return {
            "plan_version": 1,
            "target": self.target,
            "gpu": self.profile.to_json(),
            "model": self.info["model"],
            "tensorrt_version": self.tensorrt_version,
            "ranges": self.ranges.to_json(),
            "default_precision": self.default_precision,
            "builder": self.builder,
            "components": {name: c.to_json(self.root) for name, c in self.components.items()},
            "vram": self.vram.to_json(),
            "notes": self.notes,
        }

    def summary(self) -> list[str]:
        """Human-readable lines for --dry-run."""
        v = self.vram
        lines = [f"plan for {self.target} ({self.profile.description or self.profile.sm}, {self.profile.sm}, "
                 f"{self.profile.vram_gb:g} GiB), model {self.info['model']['name']}, TensorRT {self.tensorrt_version or 'not installed'}",
                 "  ranges: " + ", ".join(f"{k} {v}" for k, v in self.ranges.to_json().items())]
        for name, comp in self.components.items():
            s = comp.stats
            built = ", ".join(f"{p} <- {_relative(vp.source, self.root)}" for p, vp in comp.variants.items())
            lines.append(f"  {name}: {built}; runs {comp.runtime_precision}: weights {_gib(s.weights['engine'])}, "
                         f"activations {_gib(s.activation_bytes)}, io {_gib(s.io_bytes)} at max shape")
        lines.append(f"  builder: opt level {self.builder['builder_optimization_level']}, workspace {self.builder['workspace_mib']} MiB, "
                     f"hardware compat {self.builder['hardware_compatibility']}, version compatible {self.builder['version_compatible']}")
        lines.append(f"  VRAM: resident {_gib(v.resident)}, --low-vram {_gib(v.low_vram)}, build {_gib(v.build)}, "
                     f"reserve {_gib(v.reserve)}; {v.mode} needs {_gib(v.required)} of {_gib(v.total)}: "
                     + ("fits" if v.fits else "DOES NOT FIT"))
        lines += [f"  would fit: {a}" for a in v.alternatives] if not v.fits else []
        lines += [f"  note: {n}" for n in self.notes]
        return lines


def _gib(n: int) -> str:
    """Bytes as GiB text (MiB below 1 GiB, so small models do not read as zero)."""
    return f"{n / GIB:.2f} GiB" if n >= GIB else f"{n / MIB:.1f} MiB"


def _relative(path: Path, root: Path) -> str:
    """A path relative to artifacts/<model> when inside it."""
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def installed_tensorrt_version() -> str | None:
    """The installed TensorRT's version from package metadata (never imports tensorrt)."""
    for dist in ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-lean", "tensorrt_lean"):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def short_version(version: str | None) -> str:
    """'10.13.3.9' -> '10.13.3'; 'NA' when TensorRT is not installed here."""
    return ".".join(version.split(".")[:3]) if version else "NA"


def engine_name(component: str, precision: str, tensorrt_version: str | None, sm: str) -> str:
    """<component>.<precision>.trt<version>.<sm>.plan, e.g. denoiser.int8.trt10.13.3.sm86.plan."""
    return f"{component}.{precision}.trt{short_version(tensorrt_version)}.{sm}.plan"


def trt_sources(paths: ArtifactPaths, allowed: tuple[str, ...], notes: list[str]) -> dict[str, dict[str, Path]]:
    """Per component and precision, the TensorRT-ready graph: the fp16/bf16/int8/fp8 graphs when built, else *.opt.onnx (fp32)."""
    sources: dict[str, dict[str, Path]] = {}
    for component in COMPONENTS:
        opt = paths.onnx(component, "opt")
        if not opt.is_file():
            raise T2VError(f"{opt} is missing: run `t2vtrt surgery` (or `make engines`) first")
        low: dict[str, Path] = {}
        for kind in EXTRA_KINDS:
            graph = paths.onnx(component, kind)
            if not graph.is_file():
                continue
            if kind not in allowed:
                notes.append(f"{_relative(graph, paths.root)} skipped: this GPU profile does not run {kind}")
                continue
            low[kind] = graph
        # An FP32 engine next to a lower-precision one is never run by default and costs build time and build
        # memory (a 1.4B denoiser's FP32 engine alone is 5.3 GiB): GPU targets build it only when nothing else exists.
        sources[component] = low or {graph_precision(load_graph(opt)): opt}
    return sources


def runtime_precision(default: str, built: dict[str, Any]) -> str:
    """The manifest rule (runtime.manifest.Manifest.variant): the default if built, else fp16, else fp32."""
    for precision in (default, "fp16", "fp32"):
        if precision in built:
            return precision
    return next(iter(built))


def make_plan(paths: ArtifactPaths, profile: GpuProfile, low_vram: bool = False, version_compatible: bool = False,
              hardware_compat: str | None = None, tensorrt_version: str | None = None) -> BuildPlan:
    """The build plan for `profile`: sources, optimization profiles, builder settings, VRAM estimate."""
    info = read_export_info(paths)
    notes: list[str] = []
    tensorrt_version = tensorrt_version or installed_tensorrt_version()
    if tensorrt_version is None:
        notes.append("TensorRT is not installed here: engine names get its version at build time")
    ranges, specs = _ranges_and_specs(info, profile, notes)
    sources = trt_sources(paths, profile.precisions, notes)
    built = {p for by_precision in sources.values() for p in by_precision}
    default = next(p for p in PREFERENCE if p in built)
    components = {name: component_plan(name, specs[name], sources[name], default, tensorrt_version, profile.sm)
                  for name in COMPONENTS}
    vram = estimate_vram(profile, components, ranges, low_vram, default)
    if not vram.fits:
        chunked = chunk_vae(profile, components, ranges, low_vram, default, tensorrt_version, notes)
        if chunked is not None:
            vram = chunked
    for name, comp in components.items():
        if comp.stats.unknown_shapes:
            notes.append(f"{name}: {comp.stats.unknown_shapes} intermediate shapes unknown after shape inference, each guessed "
                         f"as its node's largest input (e.g. {', '.join(comp.stats.guessed)})")
    level = hardware_compat or profile.hardware_compatibility
    builder = {
        "builder_optimization_level": profile.builder_optimization_level,
        "workspace_mib": vram.workspace // MIB,
        "memory_pool_limits_mib": {**profile.memory_pool_limits, "workspace_mib": vram.workspace // MIB},
        "hardware_compatibility": level,
        "version_compatible": version_compatible,
        # TensorRT's default: each version-compatible plan embeds its lean runtime, so later TensorRT loads it
        # on its own; an excluded one needs Runtime.load_runtime(libnvinfer_lean of this very version).
        "exclude_lean_runtime": False,
        "strongly_typed": True,
        "precision_flags": [],  # precision lives in the graphs
        "timing_cache": _relative(timing_cache_path(paths, profile.name, tensorrt_version), paths.root),
    }
    return BuildPlan(profile.name, profile, paths.root, info, ranges, components, builder, vram, default, tensorrt_version, notes)


def component_plan(name: str, spec: dict[str, Any], sources: dict[str, Path], default: str,
                   tensorrt_version: str | None, sm: str) -> ComponentPlan:
    """One component's variants, analysed at the max shape of its optimization profile."""
    shapes = input_profiles(spec)
    max_shapes = {k: tuple(v[2]) for k, v in shapes.items()}
    variants = {p: VariantPlan(p, src, engine_name(name, p, tensorrt_version, sm), analyze_graph(src, max_shapes))
                for p, src in sources.items()}
    return ComponentPlan(name, spec, shapes, variants, runtime_precision(default, variants))


def chunk_vae(profile: GpuProfile, components: dict[str, ComponentPlan], ranges: ShapeRanges, low_vram: bool,
              default: str, tensorrt_version: str | None, notes: list[str]) -> VramPlan | None:
    """Decode the video in chunks of fewer frames (the vae_decoder's batch axis) when that makes the plan fit.

    The runtime decodes frames in chunks of at most the axis maximum, so the largest chunk that fits is
    taken; `components` is updated in place. None (and nothing changed) when no chunk size fits.
    """
    vae = components["vae_decoder"]
    lo, opt, hi = vae.spec["axes"]["batch"]
    for chunk in sorted({max(lo, hi // d) for d in (2, 3, 4, 6, 8, 12, 16, 24)} | {lo}, reverse=True):
        if chunk >= hi:
            continue
        spec = {**vae.spec, "axes": {**vae.spec["axes"], "batch": [lo, min(opt, chunk), chunk]}}
        sources = {p: v.source for p, v in vae.variants.items()}
        trial = {**components, "vae_decoder": component_plan("vae_decoder", spec, sources, default, tensorrt_version, profile.sm)}
        vram = estimate_vram(profile, trial, ranges, low_vram, default)
        if vram.fits:
            components.update(trial)
            notes.append(f"vae_decoder: decodes {chunk} frames at a time (not {hi}) so the plan fits: "
                         f"activations {_gib(vae.stats.activation_bytes)} -> {_gib(trial['vae_decoder'].stats.activation_bytes)}")
            return vram
    return None


def _ranges_and_specs(info: dict[str, Any], profile: GpuProfile, notes: list[str]) -> tuple[ShapeRanges, dict[str, Any]]:
    """The effective ranges (GPU profile within the model's) and the component entries for them."""
    model_ranges = ShapeRanges.from_json(info["ranges"])
    ranges = effective_ranges(model_ranges, profile.ranges_for(info["model"]["family"]))
    specs = component_specs_for(info, ranges)
    if specs is None:
        notes.append("export.json has no family config, so the GPU profile's shapes were not applied: "
                     "the engines use the exported ranges")
        return model_ranges, info["components"]
    return ranges, specs


def timing_cache_path(paths: ArtifactPaths, target: str, tensorrt_version: str | None) -> Path:
    """engines/timing/<gpu>.trt<version>.cache: kept across rebuilds (outside the swapped target dir)."""
    return paths.root / "engines" / "timing" / f"{target}.trt{short_version(tensorrt_version)}.cache"


# --------------------------------------------------------------------------- VRAM


def estimate_vram(profile: GpuProfile, components: dict[str, ComponentPlan], ranges: ShapeRanges,
                  low_vram: bool, default: str) -> VramPlan:
    """Resident / low-VRAM / build needs against the profile, with what would fit otherwise."""
    total = int(profile.vram_gb * GIB)
    reserve = int(profile.reserve_gb * GIB)
    resident, per_stage = _needs(components)
    wanted = profile.memory_pool_limits.get("workspace_mib", 4096) * MIB
    # The builder never needs more scratch than is left beside the largest engine; cap it there.
    workspace = max(MIN_WORKSPACE, min(wanted, total - reserve - per_stage))
    build = max(c.stats.weights["engine"] + c.stats.activation_bytes for c in components.values()) + workspace
    vram = VramPlan(total, reserve, resident, per_stage, build, workspace,
                    max(c.stats.activation_bytes for c in components.values()), "low_vram" if low_vram else "resident")
    if not vram.fits:
        vram.alternatives = alternatives(vram, components, ranges, default)
    return vram


def _needs(components: dict[str, ComponentPlan], scale: float = 1.0, denoiser_int8: bool = False) -> tuple[int, int]:
    """(resident bytes, largest single stage bytes) with activations scaled and optionally an int8 denoiser."""
    needs = []
    for name, comp in components.items():
        need = comp.need(scale)
        if denoiser_int8 and name == "denoiser":
            need += comp.stats.weights["int8"] - comp.stats.weights["engine"]
        needs.append(need)
    return sum(needs), max(needs)


def alternatives(vram: VramPlan, components: dict[str, ComponentPlan], ranges: ShapeRanges, default: str) -> list[str]:
    """What would fit: per-stage load/unload, an INT8 denoiser, a smaller max shape."""
    budget = vram.total - vram.reserve
    out = []
    if vram.mode == "resident" and vram.low_vram <= budget:
        out.append(f"--low-vram (load and free each stage's engine) needs {_gib(vram.low_vram + vram.reserve)}")
    if default != "int8":
        resident, stage = _needs(components, denoiser_int8=True)
        need = stage if vram.mode == "low_vram" else resident
        if need <= budget:
            out.append(f"an INT8 denoiser (run `t2vtrt calibrate` and `t2vtrt quantize` first) needs {_gib(need + vram.reserve)}")
    smaller = smaller_shape(components, ranges, budget, vram.mode == "low_vram")
    if smaller:
        out.append(smaller)
    if not out:
        out.append("nothing in reach: pick a GPU profile with more memory (see `t2vtrt gpus`)")
    return out


def smaller_shape(components: dict[str, ComponentPlan], ranges: ShapeRanges, budget: int, low_vram: bool) -> str | None:
    """The largest max shape (frames, then height/width) that fits, scaling activations by volume (approximate)."""
    frames_lo, _, frames_hi = ranges.frames
    volume = ranges.batch[2] * frames_hi * ranges.height[2] * ranges.width[2]
    candidates = []
    frames = frames_hi
    while frames >= frames_lo:
        for factor in (1.0, 0.75, 0.5, 0.25):
            h = max(ranges.height[0], int(ranges.height[2] * factor) // 8 * 8)
            w = max(ranges.width[0], int(ranges.width[2] * factor) // 8 * 8)
            candidates.append((frames * h * w, frames, h, w))
        if frames == frames_lo:
            break
        frames = max(frames_lo, frames // 2)
    for vol, frames, h, w in sorted(set(candidates), reverse=True):
        scale = ranges.batch[2] * vol / volume
        resident, stage = _needs(components, scale)
        need = stage if low_vram else resident
        if scale < 1.0 and need <= budget:
            return f"a max shape of {frames} frames at {h}x{w} needs about {_gib(need)} plus the reserve (narrow the GPU profile's [shapes])"
    return None
