"""Read a Q/DQ graph's activation scales back (tests check what calibration wrote into the graphs)."""

from __future__ import annotations

from typing import Any

from onnx import numpy_helper

from t2vtrt.calibration.qdq import activation_quantizers


def activation_scales(model: Any) -> dict[str, float]:
    """Activation tensor -> its per-tensor scale."""
    inits = {t.name: t for t in model.graph.initializer}
    return {t: float(numpy_helper.to_array(inits[q.input[1]]).reshape(-1)[0]) for t, q in activation_quantizers(model).items()}
