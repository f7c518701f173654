"""Helpers every family module uses to read a diffusers layout and wrap torch modules for export."""

from __future__ import annotations

import json
from pathlib import Path


def class_name(config: Path) -> str | None:
    """The `_class_name` of a diffusers config (or transformers' `architectures[0]`), or None."""
    try:
        data = json.loads(config.read_text())
    except (OSError, ValueError):
        return None
    return data.get("_class_name") or (data.get("architectures") or [None])[0]


def quiet_loaders() -> None:
    """Our own progress bars report the stages; transformers' per-shard bars and diffusers' fallbacks are noise."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging

    logging.disable_progress_bar()
    # A missing weight file makes diffusers log (as errors) its fallbacks before it raises; our one-line error says it all.
    diffusers_logging.set_verbosity(diffusers_logging.CRITICAL)


def module_base() -> type:
    """torch.nn.Module, imported late so the family registry stays importable without torch."""
    import torch

    return torch.nn.Module
