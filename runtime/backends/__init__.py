"""Backends: one module per engine runtime, each `open(...) -> Session`; imported only when used."""

from __future__ import annotations

import importlib
from typing import Any, Protocol

import numpy as np

from t2vtrt.runtime.errors import T2VError
from t2vtrt.runtime.manifest import Manifest
from t2vtrt.runtime.shapes import check_feeds

BACKENDS = {
    "onnxruntime": "t2vtrt.runtime.backends.onnxruntime",
    "tensorrt": "t2vtrt.runtime.backends.tensorrt",
}
Feeds = dict[str, np.ndarray]  # an engine call's inputs (or outputs), by tensor name


class Session(Protocol):
    """What the pipeline needs from an engine: named numpy in, named numpy out."""

    def run(self, feeds: Feeds) -> Feeds: ...

    def close(self) -> None: ...


class CheckedSession:
    """Checks every call's inputs against the component's built profile, then runs the engine."""

    def __init__(self, name: str, spec: dict[str, Any], inner: Session) -> None:
        self.name, self.spec, self.inner = name, spec, inner

    def run(self, feeds: Feeds) -> Feeds:
        """Run one inference; a backend's own exception becomes one line naming the component."""
        check_feeds(self.name, self.spec, feeds)
        try:
            return self.inner.run(feeds)
        except T2VError:
            raise
        except Exception as exc:  # onnxruntime / TensorRT raise their own types, with multi-line messages
            raise T2VError(
                f"{self.name}: the engine failed to run ({type(exc).__name__}: {first_line(exc)}); "
                "rebuild the target with `make engines` and keep hash checks on"
            ) from exc

    def close(self) -> None:
        """Release the engine."""
        self.inner.close()


def open_session(manifest: Manifest, component: str, precision: str | None = None, **options: Any) -> CheckedSession:
    """Open `component` at `precision` with the backend its variant names."""
    variant = manifest.variant(component, precision)
    backend = variant["backend"]
    if backend not in BACKENDS:
        raise T2VError(f"manifest names unknown backend {backend!r} for {component}: known are {', '.join(BACKENDS)}")
    module = importlib.import_module(BACKENDS[backend])
    path = manifest.path(variant["file"])
    try:
        inner = module.open_session(path, manifest.component(component), variant, manifest, **options)
    except T2VError:
        raise
    except Exception as exc:  # a damaged or foreign file (only reachable with verify_hashes=False)
        raise T2VError(
            f"{path} cannot be loaded by {backend} ({type(exc).__name__}: {first_line(exc)}): the file is damaged "
            "or not a graph of this target; rebuild it with `make engines` (and keep hash checks on)"
        ) from exc
    return CheckedSession(component, manifest.component(component), inner)


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message, shortened: errors stay one line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0][:300] if lines else type(exc).__name__
