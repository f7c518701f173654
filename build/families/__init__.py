"""The registry of model families. Adding a family is adding a module here; stages never change."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, cast

from t2vtrt.runtime.errors import T2VError

if TYPE_CHECKING:
    from t2vtrt.build.families.contract import Family

# name -> module. Modules import torch/diffusers only inside functions, so listing is cheap.
FAMILIES: dict[str, str] = {
    "unet3d": "t2vtrt.build.families.unet3d",
    "wan": "t2vtrt.build.families.wan",
}


def get_family(name: str) -> "Family":
    """The family module registered under `name`, checked against the contract (build/families/contract.py)."""
    from t2vtrt.build.families.contract import check_family

    if name not in FAMILIES:
        raise T2VError(f"unknown model family {name!r}: known families are {', '.join(sorted(FAMILIES))}")
    module = importlib.import_module(FAMILIES[name])
    check_family(module, name)
    return cast("Family", module)


def detect_family(model_dir: Path) -> "Family":
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
