"""Golden references: the FP32 reference's inputs, outputs and videos, stored with the model's hash.

Layout of a golden set (default artifacts/<model>/golden/; any directory with --golden):
    golden.json               model name + hash, tool versions, the eval set, what is stored
    inputs/<component>.json   polygraphy input JSON (list of feed dicts)
    outputs/<component>.json  polygraphy RunResults of the reference runner, renamed "golden"
    videos.npz                uint8 (F, H, W, 3) per case key
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from t2vtrt.build.compare.capture import load_inputs, save_inputs
from t2vtrt.build.compare.runners import GOLDEN
from t2vtrt.build.engines.manifest import tool_versions
from t2vtrt.runtime.backends import Feeds
from t2vtrt.runtime.errors import T2VError
from t2vtrt.runtime.files import atomic_dir, write_json

SCHEMA_VERSION = 1


@dataclass
class Golden:
    """A loaded golden set (arrays are read on demand)."""

    root: Path
    meta: dict[str, Any]

    @property
    def model_hash(self) -> str:
        """The model hash the set was recorded from."""
        return self.meta["model"]["hash"]

    @property
    def components(self) -> list[str]:
        """Components with stored inputs and outputs."""
        return list(self.meta["components"])

    def inputs(self, component: str) -> list[Feeds]:
        """The recorded feed dicts of one component."""
        return load_inputs(self.root / "inputs" / f"{component}.json")

    def outputs(self, component: str) -> list[Any]:
        """The reference outputs of one component: polygraphy IterationResults, one per input."""
        from polygraphy.comparator import RunResults

        return RunResults.load(str(self.root / "outputs" / f"{component}.json"))[GOLDEN]

    def videos(self) -> dict[str, np.ndarray]:
        """The FP32 reference videos per case key."""
        with np.load(self.root / "videos.npz") as data:
            return {key: data[key] for key in data.files}


def save_golden(
    root: Path,
    model: dict[str, Any],
    eval_set: dict[str, Any],
    inputs: dict[str, list[Feeds]],
    outputs: dict[str, list[Any]],
    videos: dict[str, np.ndarray],
) -> Path:
    """Write a golden set into `root`, swapped in whole (a reader never sees half a set)."""
    from polygraphy.comparator import IterationResult, RunResults
    from polygraphy.logger import G_LOGGER

    with atomic_dir(root) as tmp, G_LOGGER.verbosity(G_LOGGER.CRITICAL):  # no "[I] Saving ..." lines on stdout
        for component, feeds in inputs.items():
            save_inputs(tmp / "inputs" / f"{component}.json", feeds)
            iterations = [IterationResult(outputs=dict(it.items()), runner_name=GOLDEN) for it in outputs[component]]
            (tmp / "outputs").mkdir(exist_ok=True)
            RunResults([(GOLDEN, iterations)]).save(str(tmp / "outputs" / f"{component}.json"))
        np.savez_compressed(tmp / "videos.npz", **videos)
        write_json(
            tmp / "golden.json",
            {
                "schema_version": SCHEMA_VERSION,
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "model": {"name": model["name"], "hash": model["hash"]},
                "tools": tool_versions(),
                "eval": eval_set,
                "components": {c: len(feeds) for c, feeds in inputs.items()},
                "videos": sorted(videos),
            },
        )
    return root


def load_golden(root: Path, model_hash: str) -> Golden:
    """Open a golden set; refuse one recorded from another model (its references mean nothing here)."""
    meta_path = Path(root) / "golden.json"
    if not meta_path.is_file():
        raise T2VError(f"no golden set at {root} (golden.json is missing): record one with `t2vtrt compare --save-golden`")
    try:
        meta = json.loads(meta_path.read_text())
        recorded = meta["model"]["hash"]
    except (ValueError, KeyError, TypeError) as exc:
        raise T2VError(f"{meta_path} is not a golden set record ({exc}); record it again with `t2vtrt compare --save-golden`") from exc
    if recorded != model_hash:
        raise T2VError(
            f"golden set {root} was recorded for model hash {recorded[:12]}, this build's model is {model_hash[:12]}: "
            "record a new one with `t2vtrt compare --save-golden`"
        )
    return Golden(Path(root), meta)
