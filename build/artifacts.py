"""The artifact layout under artifacts/<model>/ (docs/architecture.md#the-picture), in one place."""

from __future__ import annotations

import contextlib
import fcntl
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from t2vtrt.runtime.errors import T2VError

COMPONENTS = ("text_encoder", "denoiser", "vae_decoder")


@dataclass(frozen=True)
class ArtifactPaths:
    """Paths of one model's artifacts."""

    root: Path  # artifacts/<model>

    @property
    def model_dir(self) -> Path:
        """Where an embedded model is materialised in diffusers layout."""
        return self.root / "model"

    @property
    def onnx_dir(self) -> Path:
        """Exported and patched graphs."""
        return self.root / "onnx"

    @property
    def export_info(self) -> Path:
        """The export stage's hand-off: specs, tokenizer, scheduler, latent layout, model hash."""
        return self.onnx_dir / "export.json"

    @property
    def surgery_report(self) -> Path:
        """What the surgery passes changed."""
        return self.onnx_dir / "surgery.json"

    @property
    def calib_dir(self) -> Path:
        """Captured calibration inputs and the precision plan."""
        return self.root / "calib"

    @property
    def reports_dir(self) -> Path:
        """Accuracy and benchmark reports."""
        return self.root / "reports"

    def onnx(self, component: str, kind: str = "") -> Path:
        """onnx/<component>[.<kind>].onnx, e.g. kind 'opt' or 'int8'."""
        return self.onnx_dir / (f"{component}.{kind}.onnx" if kind else f"{component}.onnx")

    def engines_dir(self, target: str) -> Path:
        """engines/<target>/: the runtime's whole input."""
        return self.root / "engines" / target


def read_export_info(paths: ArtifactPaths) -> dict[str, Any]:
    """The export stage's record; a one-line error when the stage has not run."""
    if not paths.export_info.is_file():
        raise T2VError(f"{paths.export_info} is missing: run `t2vtrt export --model ...` (or `make engines`) first")
    return json.loads(paths.export_info.read_text())


def components_of(info: dict[str, Any]) -> tuple[str, ...]:
    """The graphs a model has, as export.json lists them (a family may have more than the three COMPONENTS)."""
    return tuple(info.get("components") or COMPONENTS)


@contextlib.contextmanager
def build_lock(root: Path) -> Iterator[None]:
    """Hold artifacts/.locks/<model>.lock while a stage writes: a second build of the model waits, never interleaves."""
    # Beside, not inside, the model's folder: a bad model name must not leave an empty folder behind.
    locks = root.parent / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / f"{root.name}.lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another build of {root} to finish ...", file=sys.stderr, flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
