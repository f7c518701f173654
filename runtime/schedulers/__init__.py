"""numpy samplers that reproduce diffusers' schedulers to float32 rounding, and a registry by sampler name.

Only numpy and the standard library are imported here: a service runs these without torch.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, Mapping, Protocol

import numpy as np

from ..errors import T2VError
from .ddim import DDIMScheduler
from .dpm_solver import DPMSolverMultistepScheduler
from .flow_match import FlowMatchEulerScheduler
from .unipc import UniPCMultistepScheduler


class Scheduler(Protocol):
    """What the denoising loop uses; every sampler here provides exactly this."""

    timesteps: np.ndarray
    init_noise_sigma: float

    def set_timesteps(self, num_inference_steps: int) -> None: ...

    def scale_model_input(self, sample: np.ndarray, timestep: Any) -> np.ndarray: ...

    def step(self, model_output: np.ndarray, timestep: Any, sample: np.ndarray, noise: np.ndarray | None = None) -> np.ndarray: ...


SAMPLERS: dict[str, Callable[..., Scheduler]] = {
    "ddim": DDIMScheduler.from_config,
    "dpm++": partial(DPMSolverMultistepScheduler.from_config, use_karras_sigmas=False),
    "dpm++karras": partial(DPMSolverMultistepScheduler.from_config, use_karras_sigmas=True),
    "flow-euler": FlowMatchEulerScheduler.from_config,
    "unipc": UniPCMultistepScheduler.from_config,
}


def make_scheduler(name: str, config: Mapping[str, Any], prediction_type: str | None = None, **overrides: Any) -> Scheduler:
    """The sampler `name` built from a diffusers scheduler_config.json dict; overrides (e.g. eta=) win over config."""
    factory = SAMPLERS.get(name)
    if factory is None:
        raise T2VError(f"unknown sampler {name!r}; choose one of: {', '.join(SAMPLERS)}")
    if prediction_type is not None:
        # The manifest says "flow" (velocity); diffusers' UniPC and DPM configs call it flow_prediction.
        overrides["prediction_type"] = "flow_prediction" if prediction_type == "flow" else prediction_type
    return factory(config, **overrides)


__all__ = [
    "SAMPLERS",
    "DDIMScheduler",
    "DPMSolverMultistepScheduler",
    "FlowMatchEulerScheduler",
    "Scheduler",
    "UniPCMultistepScheduler",
    "make_scheduler",
]
