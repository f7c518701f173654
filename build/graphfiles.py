"""ONNX graphs on disk whose weights stay out of Python: load without them, save into one <graph>.onnx.data.

Why: the real-size denoiser holds 5.6 GB of FP32 weights. `onnx.load` reads all of them into the protobuf,
graphsurgeon turns the ones a pass looks at into numpy arrays, `export_onnx` copies those again and
`onnx.save` serialises once more: surgery peaked at 3.4x the weights. Here a loaded graph keeps every
tensor above INLINE_BYTES as a reference into the file it came from (made absolute, so it can be read from
any folder); a save copies those bytes file to file, a chunk at a time, into one `<graph>.onnx.data`.
Only the few weights a pass rewrites are ever numpy arrays, and `spill_constants` moves those back to disk
before the graph is exported. ONNX Runtime refuses absolute external-data locations: a loaded graph goes to it
only through `save_graph` (or with its locations made relative to a folder above the data).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.ir.tensor import LazyValues

from t2vtrt.runtime.backends.onnxruntime import new_session
from t2vtrt.runtime.errors import T2VError
from t2vtrt.runtime.files import scratch_path, temp_dir

# External tensors up to this size are read in at load: shape constants, Slice bounds, biases, scalars
# that passes, shape inference and constant folding read by value. Bigger ones are weights.
INLINE_BYTES = 64 << 10
# Tensors from this size are written to the .data file (onnx.save's size_threshold); smaller stay in the graph.
DATA_THRESHOLD = 1024
# Protobuf cannot serialize a message over 2 GiB: past this many bytes of weights a graph is saved with its
# weights in one <graph>.onnx.data (and checked by path, which is how the checker handles those).
EXTERNAL_DATA_BYTES = 1_800_000_000
# Offsets of tensors in the .data file are multiples of this, so ONNX Runtime can map them instead of copying.
ALIGN = 64 << 10
_CHUNK = 64 << 20  # bytes per read when copying between files: bounded memory for any tensor size
_EXTERNAL = onnx.TensorProto.EXTERNAL
Fill = Callable[[onnx.TensorProto], "bytes | None"]


def data_path(graph: Path) -> Path:
    """<graph>.onnx.data, the one external-data file of a graph."""
    return graph.with_name(graph.name + ".data")


def all_tensors(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    """Initializers and Constant-node tensors of the main graph and its subgraphs."""
    from onnx.external_data_helper import _get_all_tensors

    return list(_get_all_tensors(model))


def is_external(tensor: onnx.TensorProto) -> bool:
    """Whether the tensor's bytes live in a file rather than in the protobuf."""
    return tensor.data_location == _EXTERNAL


def external_ref(tensor: onnx.TensorProto) -> tuple[Path, int, int]:
    """(file, offset, length) of an external tensor whose location was made absolute by load_graph."""
    info = {entry.key: entry.value for entry in tensor.external_data}
    file = Path(info["location"])
    offset = int(info.get("offset", 0))
    length = int(info["length"]) if "length" in info else file.stat().st_size - offset
    return file, offset, length


def tensor_nbytes(tensor: onnx.TensorProto) -> int:
    """Bytes of the tensor's values, wherever they are."""
    if is_external(tensor):
        return external_ref(tensor)[2]
    return len(tensor.raw_data) if tensor.raw_data else tensor.ByteSize()


def weight_bytes(model: onnx.ModelProto) -> int:
    """Bytes of all tensor data of the model, in memory or on disk."""
    return sum(tensor_nbytes(t) for t in all_tensors(model))


def needs_external_data(path: Path) -> bool:
    """Whether a saved graph (with its <graph>.onnx.data, if any) is past EXTERNAL_DATA_BYTES: tools that rewrite it
    must write external data too."""
    path, data = Path(path), data_path(Path(path))
    return path.stat().st_size + (data.stat().st_size if data.is_file() else 0) > EXTERNAL_DATA_BYTES


def external_data_files(graph: Path) -> list[Path]:
    """The files beside `graph` that hold its external weights, sorted by name (no weight is read)."""
    model = onnx.load(str(graph), load_external_data=False)
    names = {entry.value for tensor in all_tensors(model) if is_external(tensor) for entry in tensor.external_data if entry.key == "location"}
    return [Path(graph).parent / name for name in sorted(names)]


def load_graph(path: Path, inline_bytes: int | None = None, missing_ok: bool = False) -> onnx.ModelProto:
    """The model at `path`, small external tensors read in, large ones left on disk (absolute locations).

    `missing_ok`: tensors whose data file is missing or short stay as they are, unread (for analyses that need
    only shapes and types; the stage that copies the weights names the missing file)."""
    path = Path(path)
    if not path.is_file():
        raise T2VError(f"{path} is missing: run the stage that writes it first")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # protobuf DecodeError, ...
        raise T2VError(f"{path} is not a readable ONNX model: {err}") from err
    base = path.parent.resolve()
    limit = INLINE_BYTES if inline_bytes is None else inline_bytes
    for tensor in all_tensors(model):
        if is_external(tensor) and _locate(tensor, base, path, missing_ok) and tensor_nbytes(tensor) <= limit:
            _inline(tensor)
    return model


def _locate(tensor: onnx.TensorProto, base: Path, graph: Path, missing_ok: bool = False) -> bool:
    """Make the tensor's location absolute, checking that its bytes are there (with `missing_ok`: False if not)."""
    entries = {entry.key: entry for entry in tensor.external_data}
    if "location" not in entries:
        raise T2VError(f"{graph}: tensor {tensor.name} has external data without a location: export the graph again")
    file = base / entries["location"].value
    entries["location"].value = str(file)
    found, offset, length = external_ref(tensor) if file.is_file() else (file, 0, 0)
    if not file.is_file() or file.stat().st_size < offset + length:
        if missing_ok:
            return False
        raise T2VError(
            f"{graph} is not a readable ONNX model: the weights of {tensor.name} are missing or truncated in "
            f"{found}; copy the graph together with its data file(s), or export it again"
        )
    return True


def externalize(model: onnx.ModelProto, spill: Path, threshold: int | None = None) -> onnx.ModelProto:
    """A copy of `model` whose in-memory tensors above `threshold` bytes are moved to `spill` (appended).

    For a graph saved in one file (no external data): after this it is handled like any other, its weights
    read only when needed. The copy lets go of the loaded protobuf's memory once `model` is dropped.
    """
    limit = INLINE_BYTES if threshold is None else threshold
    with open(spill, "ab") as out:
        for tensor in all_tensors(model):
            if is_external(tensor) or not tensor.raw_data or len(tensor.raw_data) <= limit:
                continue
            offset = out.tell()
            out.write(tensor.raw_data)
            _point(tensor, str(Path(spill).resolve()), offset, len(tensor.raw_data))
    copy = onnx.ModelProto()
    copy.CopyFrom(model)  # cleared fields keep their memory in the original's arena until it is freed
    return copy


def relative_locations(model: onnx.ModelProto, base: Path) -> None:
    """Make every external location relative to `base` again (in place): ONNX Runtime reads data only below a graph's folder."""
    for tensor in all_tensors(model):
        if is_external(tensor):
            location = next(e for e in tensor.external_data if e.key == "location")
            location.value = os.path.relpath(external_ref(tensor)[0], Path(base).resolve())


@contextlib.contextmanager
def graph_beside(model: onnx.ModelProto, folder: Path, name: str) -> Iterator[Path]:
    """`model` (loaded by load_graph) saved as a scratch graph in `folder`, the folder of its weights, with its external
    locations made relative to it (in place), removed when the block ends: ONNX Runtime reads weights only below a
    graph's folder, and this way none is copied."""
    relative_locations(model, folder)
    with scratch_path(Path(folder) / f"{name}.onnx") as path:
        onnx.save(model, str(path))
        yield path


def run_probe(probe: onnx.ModelProto, source: Path, feed: dict[str, np.ndarray], tag: str) -> dict[str, np.ndarray]:
    """Run an edited copy of the graph at `source` (loaded by load_graph) once on `feed`; its outputs by name.

    The probe is saved beside `source` (graph_beside) and run in node order, so whatever the probe adds after a
    tensor (a reduction, a Shape) runs as that tensor is made and the tensor can go: ONNX Runtime's default order
    holds every probed tensor until the end.
    """
    import onnxruntime as ort

    with graph_beside(probe, source.parent, f"{source.name}.{tag}") as path:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.execution_order = ort.ExecutionOrder.PRIORITY_BASED
        session = new_session(str(path), options)
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {i.name: feed[i.name] for i in session.get_inputs()})))


def read_bytes(tensor: onnx.TensorProto) -> bytes:
    """The raw little-endian bytes of a tensor, read from its file when external."""
    if not is_external(tensor):
        return tensor.raw_data if tensor.raw_data else onnx.numpy_helper.to_array(tensor).tobytes()
    file, offset, length = external_ref(tensor)
    with open(file, "rb") as src:
        src.seek(offset)
        data = src.read(length)
    if len(data) != length:
        raise T2VError(f"{file} is truncated (tensor {tensor.name}): copy or export the graph again")
    return data


def read_array(tensor: onnx.TensorProto) -> np.ndarray:
    """A tensor's values as numpy, read from disk when external (the proto is left as it is)."""
    if not is_external(tensor):
        return onnx.numpy_helper.to_array(tensor)
    copy = onnx.TensorProto()
    copy.CopyFrom(tensor)
    del copy.external_data[:]
    copy.ClearField("data_location")
    copy.raw_data = read_bytes(tensor)
    return onnx.numpy_helper.to_array(copy)


def _inline(tensor: onnx.TensorProto) -> None:
    """Read an external tensor's bytes into the protobuf."""
    tensor.raw_data = read_bytes(tensor)
    del tensor.external_data[:]
    tensor.ClearField("data_location")  # unset, as onnx.save writes it: the same bytes as before


def _point(tensor: onnx.TensorProto, location: str, offset: int, length: int) -> None:
    """Make `tensor` an external reference to `length` bytes at `offset` of `location`."""
    del tensor.external_data[:]
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    tensor.data_location = _EXTERNAL
    tensor.ClearField("raw_data")


class DiskValues(LazyValues):
    """graphsurgeon's lazy constant values, read from the tensor's file (graphsurgeon's own cannot: absolute paths)."""

    def load(self) -> np.ndarray:
        """The values, read now."""
        return read_array(self.tensor)


def import_graph(path: Path, inline_bytes: int | None = None, spill: Path | None = None) -> gs.Graph:
    """A graphsurgeon graph of the model at `path` whose large constants stay on disk until read.

    With `spill`, the weights of a graph saved in one file are moved there first (see `externalize`).
    """
    model = load_graph(path, inline_bytes)
    if spill is not None:
        model = externalize(model, spill, inline_bytes)
    graph = gs.import_onnx(model)
    del model
    for tensor in graph.tensors().values():
        values = getattr(tensor, "_values", None)
        if isinstance(values, LazyValues) and type(values) is LazyValues and is_external(values.tensor):
            tensor._values = DiskValues(values.tensor)
    return graph


def on_disk(tensor: gs.Tensor) -> bool:
    """Whether a graphsurgeon constant's values are still only on disk (reading them would load them)."""
    return isinstance(getattr(tensor, "_values", None), DiskValues)


def spill_constants(graph: gs.Graph, spill: Path, threshold: int = DATA_THRESHOLD) -> int:
    """Write every in-memory constant of `threshold` bytes or more to `spill` and point it there; return how many."""
    count = 0
    with open(spill, "ab") as out:
        for tensor in graph.tensors().values():
            values = getattr(tensor, "_values", None)
            if not isinstance(tensor, gs.Constant) or not isinstance(values, np.ndarray):
                continue
            if values.dtype.kind not in "biuf" or values.nbytes < threshold:
                continue
            proto = onnx.TensorProto(name=tensor.name, dims=list(values.shape), data_type=onnx.helper.np_dtype_to_tensor_dtype(values.dtype))
            offset = out.tell()
            out.write(np.ascontiguousarray(values).astype(values.dtype.newbyteorder("<"), copy=False).tobytes())
            _point(proto, str(spill.resolve()), offset, values.nbytes)
            tensor._values = DiskValues(proto)  # the array is dropped: its bytes are in the file now
            count += 1
    return count


def _copy_range(src: Path, offset: int, length: int, out: Any) -> None:
    """Copy `length` bytes at `offset` of `src` to the open file `out`, a chunk at a time."""
    with open(src, "rb") as f:
        f.seek(offset)
        left = length
        while left:
            chunk = f.read(min(_CHUNK, left))
            if not chunk:
                raise T2VError(f"{src} is truncated: copy or export the graph again")
            out.write(chunk)
            left -= len(chunk)


def _write_data(tensors: list[onnx.TensorProto], data: Path, location: str, fill: Fill | None) -> None:
    """Write every tensor of DATA_THRESHOLD bytes or more to `data`, pointing it at `location`; inline the rest.

    A filled tensor's bytes go straight to the file: set on the protobuf first, they would stay in its arena
    (clearing a field gives nothing back) until the whole model is freed, every converted weight at once.
    """
    with open(data, "wb") as out:
        for tensor in tensors:
            filled = fill(tensor) if fill else None
            length = len(filled) if filled is not None else tensor_nbytes(tensor)
            if length < DATA_THRESHOLD:
                _keep_inline(tensor, filled)
                continue
            out.write(b"\0" * (-out.tell() % ALIGN))
            offset = out.tell()
            if filled is not None:
                out.write(filled)
                tensor.doc_string = ""  # a stand-in's record of where its bytes were
            elif is_external(tensor):
                _copy_range(*external_ref(tensor), out)
            else:
                out.write(read_bytes(tensor))
            _point(tensor, location, offset, length)  # its bytes are in the file now: the protobuf lets them go


def _keep_inline(tensor: onnx.TensorProto, filled: bytes | None) -> None:
    """Hold a tensor's bytes in the protobuf: a stand-in's filled bytes (made now), or read from its file."""
    if filled is not None:
        tensor.doc_string = ""
        tensor.raw_data = filled
    elif is_external(tensor):
        _inline(tensor)


def save_graph(model: onnx.ModelProto, out: Path, external: bool | None = None, fill: Fill | None = None) -> Path:
    """Check and write `model` to `out` atomically: one file, or `out` + one <out>.data (data lands first).

    `external`: None decides by size (past EXTERNAL_DATA_BYTES of weights). External tensors are copied from
    their files, a chunk at a time; `fill(tensor)` may give the bytes of a stand-in tensor as it is written.
    The model's tensors are re-pointed (or inlined) as written, so do not reuse `model` afterwards.
    """
    out = Path(out)
    if external is None:
        external = weight_bytes(model) >= EXTERNAL_DATA_BYTES
    tensors = all_tensors(model)
    with temp_dir(out) as tmp:
        staged, data = tmp / out.name, data_path(tmp / out.name)
        if external:
            _write_data(tensors, data, data.name, fill)
        else:
            for tensor in tensors:
                _keep_inline(tensor, fill(tensor) if fill else None)
        onnx.save(model, str(staged))
        onnx.checker.check_model(str(staged))  # by path: works with external data and past 2 GB
        os.chmod(staged, 0o644)
        if external:
            os.chmod(data, 0o644)
            os.replace(data, data_path(out))
        else:
            data_path(out).unlink(missing_ok=True)  # a stale one from an earlier, bigger graph
        os.replace(staged, out)
    return out


def consolidate(graph: Path, out: Path) -> Path:
    """Rewrite a graph whose weights are spread over many files (the exporter's) as `out` + one <out>.data."""
    return save_graph(load_graph(graph), out, external=True)
