"""The one registry of surgery passes, and the default pipeline per component."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import onnx_graphsurgeon as gs

from t2vtrt.build.families.unet3d import SURGERY as _UNET3D_SURGERY
from t2vtrt.runtime.errors import T2VError

from .attention import fuse_attention_ort
from .casts import fold_casts
from .cleanup import cleanup
from .fold import fold_constants
from .geglu import split_geglu
from .identity import remove_identity
from .instance_norm import instance_norm_to_layer_norm
from .onehot import onehot_to_gather
from .qdq_matmul import fuse_matmul_integer_bias
from .qdq_shapes import shapes_skip_dequantize
from .scales import fold_scale_into_weights
from .shapes import infer_shapes
from .transposes import split_slow_transposes


@dataclass(frozen=True)
class Pass:
    """A named graph rewrite: `fn(graph)` edits the graph in place and returns how many things it changed."""

    name: str
    fn: Callable[[gs.Graph], int]
    description: str

    def __call__(self, graph: gs.Graph) -> int:
        """Run the pass on `graph`."""
        return int(self.fn(graph))


def _register(*fns: Callable[[gs.Graph], int]) -> dict[str, Pass]:
    """Passes keyed by function name, described by the first line of their docstring."""
    return {fn.__name__: Pass(fn.__name__, fn, (fn.__doc__ or "").strip().splitlines()[0]) for fn in fns}


PASSES: dict[str, Pass] = _register(
    cleanup,
    remove_identity,
    infer_shapes,
    fold_constants,
    fold_casts,
    onehot_to_gather,
    fuse_attention_ort,
    split_slow_transposes,
    split_geglu,
    fold_scale_into_weights,
    shapes_skip_dequantize,
    fuse_matmul_integer_bias,
    instance_norm_to_layer_norm,
)

# Identity first so folding sees the shared weights directly; casts after folding, when every tensor has
# a dtype; OneHot after folding, when its indices have become constants; a last cleanup sorts the nodes.
DEFAULT_PIPELINE: list[str] = [
    "cleanup",
    "remove_identity",
    "fold_constants",
    "fold_casts",
    "onehot_to_gather",
    "cleanup",
]

# Per component pass lists are family data (each family's SURGERY); PIPELINES is the unet3d family's, kept
# for callers that know only one family.
PIPELINES: dict[str, list[str]] = {component: list(names) for component, names in _UNET3D_SURGERY.items()}


def pipelines_for(family: str) -> dict[str, list[str]]:
    """The shared surgery pipeline per component of a model family (its SURGERY)."""
    from t2vtrt.build.families import get_family

    return {component: list(names) for component, names in get_family(family).SURGERY.items()}


# Per target, passes applied when the target's files are written from the shared *.opt.onnx graphs:
# fusions into a runtime's own ops that other targets cannot read (TensorRT has no com.microsoft ops), and
# rewrites for one runtime's kernels (ONNX Runtime's fast Transpose paths and multithreaded LayerNormalization;
# TensorRT plans its own copies and norms).
# The two Q/DQ passes change only quantized graphs (the INT8 variants); float graphs pass through them.
TARGET_PIPELINES: dict[str, list[str]] = {
    "cpu": [
        "split_slow_transposes",
        "shapes_skip_dequantize",
        "fuse_matmul_integer_bias",
        "fuse_attention_ort",
        "instance_norm_to_layer_norm",
        "cleanup",
    ],
}


def get_pass(name: str) -> Pass:
    """The registered pass called `name`."""
    if name not in PASSES:
        raise T2VError(f"unknown surgery pass {name!r}; known passes: {', '.join(PASSES)}")
    return PASSES[name]
