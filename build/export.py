"""Stage 1: export each component of a loaded model to ONNX and check it."""

from __future__ import annotations

import contextlib
import errno
import gc
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from t2vtrt.build.families.spec import ComponentSpec, TensorSpec, resolve_shape
from t2vtrt.runtime.errors import T2VError, os_error
from t2vtrt.runtime.files import temp_dir

TWO_GB = 2**31


def sample_inputs(spec: ComponentSpec, which: str = "opt", seed: int = 0, shapes: dict[str, tuple[int, ...]] | None = None) -> dict[str, np.ndarray]:
    """Seeded random inputs for a component at a profile point (or explicit shapes)."""
    rng = np.random.default_rng(seed)
    shapes = shapes or spec.input_shapes(which)
    return {t.name: _random_tensor(t, shapes[t.name], rng) for t in spec.inputs}


def _random_tensor(tensor: TensorSpec, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Random values of the tensor's dtype inside its value range."""
    if tensor.dtype.startswith("int"):
        lo, hi = tensor.value_range or (0, 100)
        return rng.integers(int(lo), int(hi) + 1, size=shape).astype(tensor.dtype)
    if tensor.value_range is not None:
        lo, hi = tensor.value_range
        return rng.uniform(lo, hi, size=shape).astype(tensor.dtype)
    return rng.standard_normal(shape).astype(tensor.dtype)


def export_component(module: Any, spec: ComponentSpec, out_path: Path, exporter: str = "torchscript", opset: int = 17) -> Path:
    """Export one module to `out_path` (+ one <out>.data past 2 GB), checked, written atomically."""
    import torch

    from t2vtrt.build.graphfiles import consolidate

    inputs = sample_inputs(spec, shapes=export_shapes(spec, exporter))
    args = tuple(torch.from_numpy(inputs[t.name]) for t in spec.inputs)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)  # shape asserts traced as constants: expected
    warnings.filterwarnings("ignore", category=FutureWarning, module="copyreg")  # torch.export's pytree deprecation, not ours
    with temp_dir(out_path) as tmp_dir:
        tmp_path = tmp_dir / out_path.name
        axes = {"dynamic_shapes": dynamo_shapes(module, spec)} if exporter == "dynamo" else {"dynamic_axes": spec.dynamic_axes()}
        # torch.export traces under no_grad; inference tensors would leak into its fake-tensor tracing.
        with torch.no_grad() if exporter == "dynamo" else torch.inference_mode():
            torch.onnx.export(
                module,
                args,
                str(tmp_path),
                input_names=[t.name for t in spec.inputs],
                output_names=[t.name for t in spec.outputs],
                opset_version=opset,
                do_constant_folding=True,
                dynamo=exporter == "dynamo",
                external_data=_param_bytes(module) > TWO_GB - (64 << 20),
                verbose=False,  # the dynamo exporter's per-step lines would bury our progress in the log
                **axes,
            )
        if exporter == "dynamo":
            tidy_dynamo_graph(tmp_path, spec)
        check_onnx(tmp_path)
        if any(path != tmp_path for path in tmp_dir.iterdir()):
            # The exporter writes one file per weight past 2 GB (hundreds, named after tensors); every later
            # stage reads and writes <graph>.onnx + <graph>.onnx.data, so join them, file to file.
            joined = tmp_dir / "joined" / out_path.name
            consolidate(tmp_path, joined)
            _move_all(joined.parent, out_path.parent)
        else:
            _move_all(tmp_dir, out_path.parent)
    return out_path


def export_shapes(spec: ComponentSpec, exporter: str) -> dict[str, tuple[int, ...]]:
    """The sample shapes an export traces with: the opt point, but for dynamo no dynamic axis at 1.

    torch.export specialises a size-1 dimension to a constant (its 0/1 rule), so a dynamic axis whose opt is 1
    is traced at its next value inside the range instead (a VAE's batch of one prompt, for instance).
    """
    axes = {a: r[1] for a, r in spec.axes.items()}
    if exporter == "dynamo":
        axes = {a: (min(2, r[2]) if v == 1 and r[0] != r[2] else v) for a, v, r in ((a, axes[a], spec.axes[a]) for a in axes)}
    return {t.name: resolve_shape(t.shape, axes) for t in spec.inputs}


def dynamo_shapes(module: Any, spec: ComponentSpec) -> tuple[Any, ...]:
    """torch.export's dynamic_shapes for the spec's inputs, nested as forward's signature takes them (*args as one tuple).

    Every dynamic axis is Dim.DYNAMIC: the exporter infers how axes relate (a cache at twice the latent size)
    instead of us declaring each relation; its input names come from `input_names`.
    """
    import inspect

    from torch.export import Dim

    dynamic = spec.dynamic_axes()
    per_input = [{i: Dim.DYNAMIC for i in dynamic.get(t.name, {})} or None for t in spec.inputs]
    params = list(inspect.signature(module.forward).parameters.values())
    shapes: list[Any] = []
    for index, param in enumerate(params):
        if param.kind is inspect.Parameter.VAR_POSITIONAL:
            shapes.append(tuple(per_input[index:]))
            break
        shapes.append(per_input[index])
    return tuple(shapes)


def tidy_dynamo_graph(path: Path, spec: ComponentSpec) -> None:
    """Give a dynamo export the names TorchScript exports have: the spec's axis names and module-path node names."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)  # weights past 2 GB stay in their files
    name_axes(model, spec)
    name_nodes(model)
    onnx.save(model, str(path))


def name_axes(model: Any, spec: ComponentSpec) -> None:
    """Rename the dynamo exporter's symbolic dims (s0, s72, ...) after the spec's axes, in every value that uses them.

    Dims the I/O does not name (intermediate products such as 2*s15) keep their symbols.
    """
    tensors = {t.name: t for t in (*spec.inputs, *spec.outputs)}
    rename: dict[str, str] = {}
    for value in (*model.graph.input, *model.graph.output):
        dims = value.type.tensor_type.shape.dim
        for dim, want in zip(dims, tensors[value.name].shape if value.name in tensors else ()):
            if isinstance(want, str) and dim.dim_param:
                rename.setdefault(dim.dim_param, want)
    for value in (*model.graph.input, *model.graph.output, *model.graph.value_info):
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in rename:
                dim.dim_param = rename[dim.dim_param]


def scoped_node_name(scopes: list[str], op_type: str) -> str:
    """TorchScript's node name from dynamo's name_scopes (module paths, then the fx node): '/model/blocks.0/attn1/MatMul'."""
    parts, parent = [], ""
    for scope in scopes[1:-1]:
        parts.append(scope[len(parent) + 1 :] if parent and scope.startswith(parent + ".") else scope)
        parent = scope
    return "/" + "/".join([*parts, op_type])


def name_nodes(model: Any) -> None:
    """Name every node after its module path, as TorchScript does (dynamo names them node_linear_5, node_add_3 ...).

    The module path lives only in dynamo's node metadata (pkg.torch.onnx.name_scopes), which
    onnx-graphsurgeon drops on load, so surgery cannot do this; calibration's layer groups and a family's
    SENSITIVE_LAYERS match these names.
    """
    import ast

    taken: dict[str, int] = {}
    for node in model.graph.node:
        meta = {p.key: p.value for p in node.metadata_props}
        if "pkg.torch.onnx.name_scopes" not in meta:
            continue
        base = scoped_node_name(ast.literal_eval(meta["pkg.torch.onnx.name_scopes"]), node.op_type)
        count = taken.get(base, 0)
        taken[base] = count + 1
        node.name = base if count == 0 else f"{base}_{count}"


def _param_bytes(module: Any) -> int:
    """Bytes of all parameters and buffers."""
    return sum(p.numel() * p.element_size() for p in (*module.parameters(), *module.buffers()))


def _move_all(src_dir: Path, dst_dir: Path) -> None:
    """Rename every file of src_dir into dst_dir (graph last, so a graph never precedes its weights)."""
    files = sorted((p for p in src_dir.iterdir() if p.is_file()), key=lambda p: p.suffix == ".onnx")
    for path in files:
        os.replace(path, dst_dir / path.name)


def check_onnx(path: Path) -> None:
    """onnx.checker on a path (works past 2 GB), as a one-line error."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=False)
    except onnx.checker.ValidationError as exc:
        raise T2VError(f"exported graph {path} fails onnx.checker: {str(exc).splitlines()[0]}") from exc


def export_all(
    modules: dict[str, Any],
    specs: dict[str, ComponentSpec],
    out_dir: Path,
    exporter: str,
    opset: int,
    on_done: Callable[[str, float], None] | None = None,
) -> dict[str, Path]:
    """Export every component, smallest first, taking each out of `modules` once written; `on_done(name, seconds)` reports progress.

    The exporter holds a copy of many weights (transposed, folded) beside the module's own: the largest
    component, exported last, is then the only one loaded at the stage's peak.
    """
    paths = {}
    for name in sorted(specs, key=lambda n: _param_bytes(modules[n])):
        start = time.perf_counter()
        paths[name] = export_component(modules.pop(name), specs[name], out_dir / f"{name}.onnx", exporter, opset)
        gc.collect()  # its weights go now, not at some later cycle collection
        if on_done:
            on_done(name, time.perf_counter() - start)
    return paths


def run_export(model: str, artifacts_root: Path, on_done: Callable[[str, float], None] | None = None, exporter: str | None = None) -> dict[str, Any]:
    """The export stage: resolve the model, export its three graphs, write onnx/export.json."""
    from t2vtrt.build.artifacts import ArtifactPaths
    from t2vtrt.build.families import get_family
    from t2vtrt.build.models import model_hash, resolve_model
    from t2vtrt.runtime.files import sha256_file, write_json

    ref = resolve_model(model, artifacts_root)
    paths = ArtifactPaths(artifacts_root / ref.name)
    family = get_family(ref.family)
    with _undo_new_dirs(paths.onnx_dir):
        loaded = _load_model(family, ref.model_dir, paths.onnx_dir)
        specs = family.component_specs(loaded.config, ref.ranges)
        exporter = exporter or family.EXPORTER
        try:
            export_all(loaded.modules, specs, paths.onnx_dir, exporter, family.OPSET, on_done)
        except OSError as exc:
            raise os_error(exc, f"exporting {ref.name} to {paths.onnx_dir}") from exc
        except RuntimeError as exc:  # torch wraps the writer's OSError (disk full) in a RuntimeError
            if _disk_full(exc):
                raise os_error(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(paths.onnx_dir)), f"exporting {ref.name}") from exc
            raise
    info = {
        "model": {"name": ref.name, "family": ref.family, "source": str(ref.model_dir), "hash": model_hash(ref.model_dir)},
        "exporter": {"kind": exporter, "opset": family.OPSET},
        "tokenizer": {
            "file": "tokenizer.json",
            "sha256": sha256_file(paths.onnx_dir / "tokenizer.json"),
            "max_length": loaded.tokenizer_max_length,
            "pad_id": loaded.tokenizer_pad_id,
        },
        "scheduler": loaded.scheduler.to_json(),
        "latent": loaded.latent.to_json(),
        "defaults": ref.defaults.to_json(),
        "ranges": ref.ranges.to_json(),
        "sensitive_layers": list(family.SENSITIVE_LAYERS),
        # The sizes the family's specs need, so a GPU profile's other shape ranges can be planned later.
        "config": loaded.config,
        "components": {name: spec.to_json() for name, spec in specs.items()},
        # The hash chain's first link: what each graph is, so later stages can prove what they were made from.
        "graphs": {name: sha256_file(paths.onnx(name)) for name in specs},
    }
    write_json(paths.export_info, info)
    return info


def _load_model(family: Any, model_dir: Path, work_dir: Path) -> Any:
    """The family's load, with unreadable weight files as one-line errors."""
    work_dir.mkdir(parents=True, exist_ok=True)
    try:
        return family.load(model_dir, work_dir)
    except T2VError:
        raise
    except OSError as exc:
        if exc.errno in _FS_ERRNOS:
            raise os_error(exc, f"loading the model in {model_dir}") from exc
        raise _unloadable(model_dir, exc) from exc  # diffusers/transformers raise OSError for a missing weight file
    except Exception as exc:  # safetensors / transformers / diffusers raise their own types for a bad file
        raise _unloadable(model_dir, exc) from exc


_FS_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EACCES, errno.EPERM, errno.EROFS)


def _unloadable(model_dir: Path, exc: BaseException) -> T2VError:
    """A model whose files cannot be read: name the first reason and the fix."""
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
    return T2VError(
        f"the model in {model_dir} cannot be loaded ({reason}): a weight or config file is missing or "
        "truncated; copy the model directory again (all of unet/, vae/, text_encoder/, tokenizer/)"
    )


@contextlib.contextmanager
def _undo_new_dirs(folder: Path) -> Iterator[None]:
    """Remove `folder` (and its new parents) again when the block fails and they did not exist before."""
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        yield
    except BaseException:
        for path in created:  # deepest first
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
        raise


def _disk_full(exc: BaseException) -> bool:
    """True when an exception (or one it wraps) says the disk is full."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            return True
        if "No space left on device" in str(exc) or "File too large" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return False
