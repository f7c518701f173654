"""Read a Q/DQ graph's activation scales back (tests check what calibration wrote into the graphs)."""

from __future__ import annotations

from typing import Any

from onnx import numpy_helper

from t2vtrt.calibration.qdq import activation_quantizers, producers


def activation_scales(model: Any) -> dict[str, float]:
    """Activation tensor -> its per-tensor scale; a tensor cast to FP16 before its QuantizeLinear is named as before the Cast."""
    inits = {t.name: t for t in model.graph.initializer}
    made_by = producers(model)

    def source(tensor: str) -> str:
        cast = made_by.get(tensor)
        return cast.input[0] if cast is not None and cast.op_type == "Cast" else tensor

    return {source(t): float(numpy_helper.to_array(inits[q.input[1]]).reshape(-1)[0]) for t, q in activation_quantizers(model).items()}
