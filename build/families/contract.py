"""The model-family contract: what every module registered in build/families provides, and nothing else.

Stages read a family only through these names (no `getattr(family, ..., default)`); the registry checks a
module against them when it is first used, so a family missing a member fails with one line naming it rather
than deep inside a stage. A module is the implementation: `unet3d` is checked as a `Family` by mypy too.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import numpy as np

from t2vtrt.build.families.spec import ComponentSpec, Defaults, LoadedModel, ShapeRanges
from t2vtrt.runtime.errors import T2VError


class Reference(Protocol):
    """A family's diffusers PyTorch oracle over one model directory (tests, `make compare` and `make bench` hold the runtime to it)."""

    SAMPLERS: tuple[str, ...]  # runtime sampler names it reproduces

    def generate(self, prompt: str, negative: str, steps: int, guidance: float, latents: np.ndarray, sampler: str) -> tuple[np.ndarray, np.ndarray]:
        """(final latents, uint8 video (B, F, H, W, 3)) as diffusers makes them from these initial latents."""
        ...


class Family(Protocol):
    """One model family: how to recognise, load, describe, export and check its components."""

    NAME: str  # the registry key, recorded in export.json and the manifest
    EXPORTER: str  # torch.onnx exporter for its graphs: "torchscript" or "dynamo"
    OPSET: int
    # Calibration: node-name regex whose first group names a layer group; (kind, regex) per layer kind;
    # node-name regexes kept FP16 whatever the sweep measures (measured sensitive, e.g. time embeddings).
    BLOCK_PATTERN: str
    LAYER_KINDS: tuple[tuple[str, str], ...]
    SENSITIVE_LAYERS: tuple[str, ...]
    # The graphs export writes, in the order the runtime runs them (export.json's `components`).
    COMPONENTS: tuple[str, ...]
    # Surgery pass names per component (build/surgery/registry.py's PASSES), the shared *.opt.onnx pipelines.
    SURGERY: dict[str, tuple[str, ...]]

    def detect(self, model_dir: Path) -> bool:
        """True when model_dir is this family's diffusers layout."""
        ...

    def check_layout(self, model_dir: Path) -> None:
        """Raise T2VError naming the first missing or wrong file of the layout."""
        ...

    def load(self, model_dir: Path, work_dir: Path) -> LoadedModel:
        """The components as export-ready modules, the runtime tokenizer written into work_dir."""
        ...

    def component_specs(self, config: dict[str, Any], ranges: ShapeRanges) -> dict[str, ComponentSpec]:
        """Per component its I/O and axis ranges, from the sizes in `config` (export.json's) alone."""
        ...

    def defaults(self) -> Defaults:
        """Generation defaults for a user checkpoint of this family."""
        ...

    def default_ranges(self) -> ShapeRanges:
        """Shape ranges for a user checkpoint of this family."""
        ...

    def create(self, out_dir: Path, sizes: dict[str, Any], seed: int) -> None:
        """Write a seeded random model of the real classes at `sizes` in this family's layout."""
        ...

    def reference(self, model_dir: Path) -> Reference:
        """The diffusers pipeline over model_dir's torch weights, as an oracle."""
        ...

    def gpu_ranges(self, vram_gb: float) -> ShapeRanges | None:
        """Default shape ranges on a GPU of vram_gb whose profile has no [shapes.<family>] table (None: the model's own)."""
        ...


CONSTANTS = ("NAME", "EXPORTER", "OPSET", "BLOCK_PATTERN", "LAYER_KINDS", "SENSITIVE_LAYERS", "COMPONENTS", "SURGERY")
FUNCTIONS = ("detect", "check_layout", "load", "component_specs", "defaults", "default_ranges", "create", "reference", "gpu_ranges")
EXPORTERS = ("torchscript", "dynamo")


def check_family(module: ModuleType, name: str) -> None:
    """Refuse a registered module that does not implement the contract, naming what is missing."""
    missing = [m for m in CONSTANTS if not hasattr(module, m)]
    missing += [f for f in FUNCTIONS if not callable(getattr(module, f, None))]
    if missing:
        raise T2VError(f"model family {name!r} ({module.__name__}) lacks {', '.join(missing)}: implement build/families/contract.py's Family")
    if module.NAME != name:
        raise T2VError(f"model family module {module.__name__} calls itself {module.NAME!r} but is registered as {name!r}")
    if module.EXPORTER not in EXPORTERS:
        raise T2VError(f"model family {name!r}: EXPORTER {module.EXPORTER!r} is not one of {', '.join(EXPORTERS)}")
    if set(module.SURGERY or ()) != set(module.COMPONENTS or ()):
        raise T2VError(f"model family {name!r}: SURGERY must list passes for exactly its COMPONENTS ({', '.join(module.COMPONENTS)})")
