"""Check inputs against a component's built shape profile before any engine sees them."""

from __future__ import annotations

from typing import Any

import numpy as np

from t2vtrt.runtime.errors import T2VError


def check_feeds(component: str, spec: dict[str, Any], feeds: dict[str, np.ndarray]) -> None:
    """Refuse missing inputs, wrong ranks/dtypes and shapes outside the [min, max] of each axis."""
    axes = spec["axes"]
    for tensor in spec["inputs"]:
        name = tensor["name"]
        if name not in feeds:
            raise T2VError(f"{component}: input {name!r} is missing")
        array = feeds[name]
        if array.dtype != np.dtype(tensor["dtype"]):
            raise T2VError(f"{component}: input {name!r} is {array.dtype}, the graph takes {tensor['dtype']}")
        if array.ndim != len(tensor["shape"]):
            raise T2VError(f"{component}: input {name!r} has rank {array.ndim}, the graph takes {len(tensor['shape'])}")
        for size, dim in zip(array.shape, tensor["shape"]):
            _check_dim(component, name, size, dim, axes)


def _check_dim(component: str, name: str, size: int, dim: int | str, axes: dict[str, list[int]]) -> None:
    """One dimension against its fixed size or its axis range."""
    if isinstance(dim, int):
        if size != dim:
            raise T2VError(f"{component}: input {name!r} needs size {dim}, got {size}")
        return
    lo, _, hi = axes[dim]
    if not lo <= size <= hi:
        raise T2VError(
            f"{component}: {dim}={size} is outside the built profile [{lo}, {hi}]; rebuild the engines with a wider range or pick a size inside it"
        )


def check_finite(component: str, outputs: dict[str, np.ndarray], where: str = "") -> None:
    """Refuse NaN/Inf in outputs: a broken engine must fail loudly, not write a black video."""
    for name, array in outputs.items():
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            bad = int(np.size(array) - np.isfinite(array).sum())
            raise T2VError(f"{component}: output {name!r} has {bad} NaN/Inf values{where}; the engine or its precision plan is broken")
