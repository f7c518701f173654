"""One generation request to the served model over HTTP (tritonclient.http, the `serve` extra).

The same call in any language is a KServe v2 request with config.py's inputs; this is the Python one, used by the
tests and the load measurement, and the example in docs/serving.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from t2vtrt.build.triton.config import INPUTS
from t2vtrt.runtime.errors import T2VError

# Triton data type -> (KServe v2 datatype, numpy dtype)
WIRE = {"TYPE_STRING": ("BYTES", np.object_), "TYPE_INT64": ("INT64", np.int64), "TYPE_INT32": ("INT32", np.int32), "TYPE_FP32": ("FP32", np.float32)}
TYPES = {name: WIRE[dtype] for name, dtype, _, _ in INPUTS}


@dataclass
class Served:
    """One video as the server returned it."""

    video: np.ndarray  # uint8 (F, H, W, 3)
    timings: dict[str, Any]
    warnings: list[str]


def http_module() -> Any:
    """tritonclient.http, or a one-line error naming the extra that installs it."""
    try:
        import tritonclient.http as http
    except ImportError as exc:
        raise T2VError(f"tritonclient is not installed ({exc}): pip install -c constraints.txt -e '.[serve]' (or `make serve-setup`)") from None
    return http


def make_inputs(prompt: str, **settings: Any) -> list[Any]:
    """InferInputs for one video: the prompt plus every setting that is not None (None: the manifest's default)."""
    http = http_module()
    values = {"prompt": prompt, **{k: v for k, v in settings.items() if v is not None}}
    unknown = sorted(set(values) - set(TYPES))
    if unknown:
        raise T2VError(f"unknown input(s) {', '.join(unknown)}: the model takes {', '.join(TYPES)}")
    inputs = []
    for name, value in values.items():
        wire, dtype = TYPES[name]
        data = np.array([[value.encode("utf-8") if isinstance(value, str) else value]], dtype=dtype)
        item = http.InferInput(name, list(data.shape), wire)
        item.set_data_from_numpy(data)
        inputs.append(item)
    return inputs


def generate(
    client: Any, model: str, prompt: str, version: str = "", priority: int = 0, timeout_us: int | None = None, request_id: str = "", **settings: Any
) -> Served:
    """Send one request and wait for its video; tritonclient's InferenceServerException carries the server's error."""
    http = http_module()
    outputs = [http.InferRequestedOutput(name, binary_data=True) for name in ("video", "timings", "warnings")]
    result = client.infer(
        model, make_inputs(prompt, **settings), model_version=version, outputs=outputs, request_id=request_id, priority=priority, timeout=timeout_us
    )
    return Served(result.as_numpy("video")[0], json.loads(result.as_numpy("timings")[0][0]), json.loads(result.as_numpy("warnings")[0][0]))
