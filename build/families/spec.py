"""What a model family contributes: data about its components, never a loop of its own."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Range = tuple[int, int, int]  # (min, opt, max)


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: integers in `shape` are fixed, strings name an axis."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]
    value_range: tuple[float, float] | None = None  # what realistic sample inputs span (ids, timesteps)
    # What the runtime feeds or reads here (manifest v2): token_ids, token_mask, context, latent, timestep,
    # prediction, frames, or cache:<k> (a streaming VAE's causal cache k: output k feeds input k next chunk).
    role: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The manifest form."""
        data: dict[str, Any] = {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}
        if self.value_range is not None:
            data["value_range"] = list(self.value_range)
        if self.role is not None:
            data["role"] = self.role
        return data


@dataclass(frozen=True)
class ComponentSpec:
    """One exported graph: its I/O contract and its [min, opt, max] per named axis."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    axes: dict[str, Range]

    def tensor(self, role: str) -> TensorSpec:
        """The input or output that plays `role` (manifest v2); KeyError when none does."""
        for tensor in (*self.inputs, *self.outputs):
            if tensor.role == role:
                return tensor
        raise KeyError(f"{self.name} has no tensor with role {role!r}")

    def input_shapes(self, which: str = "opt") -> dict[str, tuple[int, ...]]:
        """Concrete shapes of every input at the min, opt or max point of the profile."""
        index = {"min": 0, "opt": 1, "max": 2}[which]
        return {t.name: resolve_shape(t.shape, {a: r[index] for a, r in self.axes.items()}) for t in self.inputs}

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """torch.onnx.export's dynamic_axes: every named axis whose range is not a single value."""
        dynamic = {a for a, (lo, _, hi) in self.axes.items() if lo != hi}
        return {t.name: {i: d for i, d in enumerate(t.shape) if isinstance(d, str) and d in dynamic} for t in (*self.inputs, *self.outputs)}

    def to_json(self) -> dict[str, Any]:
        """The manifest form (variants are added by the engines stage)."""
        return {
            "inputs": [t.to_json() for t in self.inputs],
            "outputs": [t.to_json() for t in self.outputs],
            "axes": {a: list(r) for a, r in self.axes.items()},
        }


def resolve_shape(shape: tuple[int | str, ...], axes: dict[str, int]) -> tuple[int, ...]:
    """Replace each axis name in `shape` by its value in `axes`."""
    return tuple(axes[d] if isinstance(d, str) else int(d) for d in shape)


@dataclass(frozen=True)
class ShapeRanges:
    """User-level [min, opt, max]: prompts per call, frames, and pixel height/width."""

    batch: Range = (1, 1, 2)
    frames: Range = (1, 8, 16)
    height: Range = (64, 64, 128)
    width: Range = (64, 64, 128)

    def to_json(self) -> dict[str, list[int]]:
        """The manifest's `ranges`."""
        return {k: list(getattr(self, k)) for k in ("batch", "frames", "height", "width")}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ShapeRanges":
        """Inverse of to_json."""
        return cls(**{k: tuple(int(x) for x in data[k]) for k in ("batch", "frames", "height", "width")})


@dataclass(frozen=True)
class Defaults:
    """Generation defaults recorded in the manifest."""

    steps: int = 20
    guidance: float = 7.5
    frames: int = 8
    height: int = 64
    width: int = 64
    fps: int = 8
    precision: str = "fp32"

    def to_json(self) -> dict[str, Any]:
        """The manifest's `defaults`."""
        return dict(self.__dict__)


@dataclass
class LatentLayout:
    """How latents relate to pixels, and how the VAE decoder takes them."""

    channels: int
    spatial_factor: int
    temporal_factor: int = 1
    # per_frame: (N,C,h,w) frames; video: (B,C,F,h,w) at once; streaming: chunks of latent frames through a
    # first/next graph pair whose causal caches are graph outputs fed back as inputs (memory flat in frames).
    vae_decode: str = "per_frame"
    size_multiple: int | None = None  # pixels: VAE x denoiser downsampling (None: spatial_factor is enough)
    stream_first: str = "vae_decoder"  # streaming: the graph that decodes the first chunk (no cache inputs)
    stream_next: str = "vae_decoder_next"  # streaming: the graph that decodes every later chunk, caches in and out
    latent_frames_per_call: int = 1  # streaming: latent frames each call decodes

    def to_json(self) -> dict[str, Any]:
        """The manifest's `latent`."""
        data: dict[str, Any] = {
            **({"size_multiple": self.size_multiple} if self.size_multiple else {}),
            "channels": self.channels,
            "layout": "BCFHW",
            "spatial_factor": self.spatial_factor,
            "temporal_factor": self.temporal_factor,
            "vae_decode": self.vae_decode,
            "vae_scaling": "in_graph",
        }
        if self.vae_decode == "streaming":
            data["stream"] = {"first": self.stream_first, "next": self.stream_next, "latent_frames_per_call": self.latent_frames_per_call}
        return data


@dataclass
class SchedulerInfo:
    """The model's scheduler config and the samplers the runtime offers for it."""

    prediction_type: str  # epsilon, v_prediction or flow (velocity: flow-matching models such as Wan)
    config: dict[str, Any]  # the model's diffusers scheduler config; every sampler is built from it
    samplers: tuple[str, ...] = ("ddim", "dpm++")
    default_sampler: str = "ddim"

    def to_json(self) -> dict[str, Any]:
        """The manifest's `scheduler`."""
        return {
            "prediction_type": self.prediction_type,
            "config": self.config,
            "samplers": list(self.samplers),
            "default_sampler": self.default_sampler,
        }


@dataclass
class LoadedModel:
    """A family's components loaded from a diffusers directory, ready to export."""

    family: str
    modules: dict[str, Any]  # component name -> torch.nn.Module taking the spec's inputs in order
    tokenizer_file: str  # path to a tokenizers tokenizer.json
    tokenizer_max_length: int
    tokenizer_pad_id: int
    scheduler: SchedulerInfo
    latent: LatentLayout
    config: dict[str, Any] = field(default_factory=dict)  # sizes the specs need (hidden size, channels ...)
