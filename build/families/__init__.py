"""The registry of model families. Adding a family is adding a module here; stages never change."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

from t2vtrt.runtime.errors import T2VError

# name -> module. Modules import torch/diffusers only inside functions, so listing is cheap.
FAMILIES: dict[str, str] = {
    "unet3d": "t2vtrt.build.families.unet3d",
}


def get_family(name: str) -> ModuleType:
    """The family module registered under `name`."""
    if name not in FAMILIES:
        raise T2VError(f"unknown model family {name!r}: known families are {', '.join(sorted(FAMILIES))}")
    return importlib.import_module(FAMILIES[name])


def detect_family(model_dir: Path) -> ModuleType:
    """The family whose layout `model_dir` has; a one-line error when none matches."""
    if not model_dir.is_dir():  # models.check_model_arg names the embedded models too, before this is reached
        raise T2VError(f"model directory {model_dir} does not exist or is a file: pass a diffusers model folder")
    for name in FAMILIES:
        family = get_family(name)
        if family.detect(model_dir):
            return family
    raise T2VError(
        f"model directory {model_dir} matches no known family ({', '.join(sorted(FAMILIES))}): "
        "expected a diffusers layout such as unet/config.json with _class_name UNet3DConditionModel"
    )
