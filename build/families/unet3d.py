"""The `unet3d` family: ModelScope text-to-video-ms-1.7b / zeroscope layout.

diffusers UNet3DConditionModel + transformers CLIPTextModel + AutoencoderKL decoded
per frame; epsilon prediction on DDPM betas. Components are loaded one by one
(never through the deprecated TextToVideoSDPipeline class).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from t2vtrt.build.families.spec import (
    ComponentSpec,
    Defaults,
    LatentLayout,
    LoadedModel,
    SchedulerInfo,
    ShapeRanges,
    TensorSpec,
)
from t2vtrt.build.families.loading import class_name, module_base, quiet_loaders
from t2vtrt.runtime.errors import T2VError

NAME = "unet3d"
EXPORTER = "torchscript"  # the dynamo exporter mis-lowers repeat_interleave(num_frames) for batch > 1
OPSET = 17
COMPONENTS = ("text_encoder", "denoiser", "vae_decoder")
# Surgery per component (names in build/surgery/registry.py's PASSES): the shared default list; the denoiser
# also splits its GEGLU projections (ONNX Runtime copies the whole projected tensor to slice it in two), after
# folding has made the Slice bounds constants, and folds attention's query/key scaling into the projection weights.
_DEFAULT_PASSES = ("cleanup", "remove_identity", "fold_constants", "fold_casts", "onehot_to_gather", "cleanup")
SURGERY: dict[str, tuple[str, ...]] = {
    "text_encoder": _DEFAULT_PASSES,
    "denoiser": (*_DEFAULT_PASSES[:-1], "split_geglu", "fold_scale_into_weights", "cleanup"),
    "vae_decoder": _DEFAULT_PASSES,
}
SUBFOLDERS = {"text_encoder": "text_encoder", "tokenizer": "tokenizer", "unet": "unet", "vae": "vae", "scheduler": "scheduler"}

# ModelScope's scheduler: DDPM scaled_linear betas, epsilon prediction.
SCHEDULER_CONFIG: dict[str, Any] = {
    "_class_name": "DDIMScheduler",
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "prediction_type": "epsilon",
    "timestep_spacing": "leading",
}

# Layers INT8 hurts most; they stay in FP16 by default (refined by measurement in calibration).
# A pattern matches a node whose name contains it or whose op type equals it.
SENSITIVE_LAYERS = (
    "time_embedding",
    "time_emb_proj",
    "conv_in",
    "conv_out",
    "conv_shortcut",
    "norm",
    "Softmax",
    # Attention BMMs (Q.K^T and P.V): UNet3D's heads are small (8-64 wide), too small for INT8 MHA kernels.
    "/attn1/MatMul",
    "/attn2/MatMul",
)

# Layer groups for the INT8 sensitivity sweep. A quantized node's block is BLOCK_PATTERN's first capture
# group; its kind is the first LAYER_KINDS entry whose regex finds a match in its name ("other" if none).
BLOCK_PATTERN = r"^/model/((?:down_blocks|up_blocks)\.\d+|mid_block|transformer_in|time_embedding|conv_in|conv_out|conv_norm_out)/"
LAYER_KINDS = (
    ("attention_bmm", r"/attn\d+/MatMul(?:_\d+)?$"),
    ("temporal_attention", r"/temp_attentions\.\d+/|^/model/transformer_in/"),
    ("spatial_attention", r"/attentions\.\d+/"),
    ("temporal_conv", r"/temp_convs\.\d+/"),
    ("resnet", r"/resnets\.\d+/"),
    ("resample", r"/(?:downsamplers|upsamplers)\.\d+/"),
    ("skip_concat", r"^/model/up_blocks\.\d+/Concat(?:_\d+)?$"),
)


def detect(model_dir: Path) -> bool:
    """True when the directory holds a UNet3DConditionModel in diffusers layout."""
    return class_name(model_dir / "unet" / "config.json") == "UNet3DConditionModel"


def check_layout(model_dir: Path) -> None:
    """Refuse a directory missing a component, naming it and the fix."""
    for part in ("text_encoder", "tokenizer", "unet", "vae", "scheduler"):
        if not (model_dir / part).is_dir():
            raise T2VError(
                f"model directory {model_dir} has no {part}/ folder: a unet3d model needs "
                "text_encoder/, tokenizer/, unet/, vae/ and scheduler/ (diffusers layout, e.g. a "
                "text-to-video-ms-1.7b or zeroscope checkout)"
            )


def load(model_dir: Path, work_dir: Path) -> LoadedModel:
    """Load the three components for export; write the runtime tokenizer.json into work_dir."""
    quiet_loaders()
    from diffusers import AutoencoderKL, UNet3DConditionModel
    from transformers import CLIPTextModel

    check_layout(model_dir)
    text_encoder = CLIPTextModel.from_pretrained(model_dir / "text_encoder", local_files_only=True).eval()
    unet = UNet3DConditionModel.from_pretrained(model_dir / "unet", local_files_only=True, low_cpu_mem_usage=False).eval()
    vae = AutoencoderKL.from_pretrained(model_dir / "vae", local_files_only=True, low_cpu_mem_usage=False).eval()
    scheduler_config = json.loads((model_dir / "scheduler" / "scheduler_config.json").read_text())
    tokenizer_file, max_length, pad_id = _runtime_tokenizer(model_dir / "tokenizer", work_dir)
    spatial = 2 ** (len(vae.config.block_out_channels) - 1)
    return LoadedModel(
        family=NAME,
        modules={
            "text_encoder": text_encoder_graph(text_encoder),
            "denoiser": denoiser_graph(unet),
            "vae_decoder": vae_decoder_graph(vae),
        },
        tokenizer_file=str(tokenizer_file),
        tokenizer_max_length=max_length,
        tokenizer_pad_id=pad_id,
        scheduler=SchedulerInfo(
            prediction_type=scheduler_config.get("prediction_type", "epsilon"),
            config=scheduler_config,
            samplers=("ddim", "dpm++", "dpm++karras", "unipc"),
            default_sampler="ddim",
        ),
        # Each down block but the last halves the latent: height and width must divide by all of it.
        latent=LatentLayout(
            channels=unet.config.in_channels,
            spatial_factor=spatial,
            vae_decode="per_frame",
            size_multiple=spatial * 2 ** (len(unet.config.down_block_types) - 1),
        ),
        config={
            "hidden_size": text_encoder.config.hidden_size,
            "vocab_size": text_encoder.config.vocab_size,
            "latent_channels": unet.config.in_channels,
            "out_channels": unet.config.out_channels,
            "vae_out_channels": vae.config.out_channels,
            "spatial_factor": spatial,
            "seq_len": max_length,
            "num_train_timesteps": int(scheduler_config.get("num_train_timesteps", 1000)),
        },
    )


def _runtime_tokenizer(tokenizer_dir: Path, work_dir: Path) -> tuple[Path, int, int]:
    """A tokenizers tokenizer.json for the runtime: the model's own, or converted from vocab/merges."""
    config = _read_json(tokenizer_dir / "tokenizer_config.json")
    max_length = int(config.get("model_max_length", 77))
    if max_length > 4096:  # transformers writes a huge sentinel when the length is unset
        max_length = 77
    out = work_dir / "tokenizer.json"  # the runtime reads only this file
    if (tokenizer_dir / "tokenizer.json").is_file():
        out.write_bytes((tokenizer_dir / "tokenizer.json").read_bytes())
    else:
        from transformers import CLIPTokenizerFast

        fast = CLIPTokenizerFast.from_pretrained(tokenizer_dir, local_files_only=True)
        fast.backend_tokenizer.save(str(out))
    vocab = json.loads(out.read_text())["model"]["vocab"]
    pad_token = config.get("pad_token", "<|endoftext|>")
    if isinstance(pad_token, dict):
        pad_token = pad_token.get("content", "<|endoftext|>")
    return out, max_length, int(vocab.get(pad_token, vocab["<|endoftext|>"]))


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON file, or {} when it is absent."""
    return json.loads(path.read_text()) if path.is_file() else {}


def component_specs(cfg: dict[str, Any], ranges: ShapeRanges) -> dict[str, ComponentSpec]:
    """Per component: I/O names, dtypes, named axes and their [min, opt, max], from export.json's config alone."""
    factor = cfg["spatial_factor"]
    b_lo, b_opt, b_hi = ranges.batch
    seq = cfg["seq_len"]
    latent_h = tuple(v // factor for v in ranges.height)
    latent_w = tuple(v // factor for v in ranges.width)
    # Classifier-free guidance doubles the batch of the text encoder and the denoiser.
    cfg_batch = (b_lo, 2 * b_opt, 2 * b_hi)
    return {
        "text_encoder": ComponentSpec(
            name="text_encoder",
            inputs=(TensorSpec("input_ids", "int32", ("batch", "seq"), (0, cfg["vocab_size"] - 1), role="token_ids"),),
            outputs=(TensorSpec("last_hidden_state", "float32", ("batch", "seq", cfg["hidden_size"]), role="context"),),
            axes={"batch": cfg_batch, "seq": (seq, seq, seq)},
        ),
        "denoiser": ComponentSpec(
            name="denoiser",
            inputs=(
                TensorSpec("sample", "float32", ("batch", cfg["latent_channels"], "frames", "latent_height", "latent_width"), role="latent"),
                TensorSpec("timestep", "float32", ("batch",), (0, cfg["num_train_timesteps"] - 1), role="timestep"),
                TensorSpec("encoder_hidden_states", "float32", ("batch", "seq", cfg["hidden_size"]), role="context"),
            ),
            outputs=(
                TensorSpec("noise_pred", "float32", ("batch", cfg["out_channels"], "frames", "latent_height", "latent_width"), role="prediction"),
            ),
            axes={"batch": cfg_batch, "frames": ranges.frames, "latent_height": latent_h, "latent_width": latent_w, "seq": (seq, seq, seq)},
        ),
        "vae_decoder": ComponentSpec(
            name="vae_decoder",
            inputs=(TensorSpec("latent", "float32", ("batch", cfg["latent_channels"], "latent_height", "latent_width"), role="latent"),),
            outputs=(TensorSpec("image", "float32", ("batch", cfg["vae_out_channels"], "height", "width"), role="frames"),),
            # Frames are decoded in chunks of at most max(frames): the batch axis is a frame count.
            axes={
                "batch": (1, ranges.frames[1], ranges.frames[2]),
                "latent_height": latent_h,
                "latent_width": latent_w,
                "height": ranges.height,
                "width": ranges.width,
            },
        ),
    }


def text_encoder_graph(text_encoder: Any) -> Any:
    """input_ids (int32) -> last_hidden_state: the pooled head is unused by the UNet."""

    def forward(self, input_ids):  # type: ignore[no-untyped-def]
        return self.model(input_ids=input_ids, return_dict=False)[0]

    return _wrap(text_encoder, forward, "TextEncoderGraph")


def denoiser_graph(unet: Any) -> Any:
    """(sample, timestep, encoder_hidden_states) -> noise_pred."""

    def forward(self, sample, timestep, encoder_hidden_states):  # type: ignore[no-untyped-def]
        return self.model(sample, timestep, encoder_hidden_states, return_dict=False)[0]

    return _wrap(unet, forward, "DenoiserGraph")


def vae_decoder_graph(vae: Any) -> Any:
    """latent as the sampler leaves it -> image in [-1, 1]; the scaling factor is applied in-graph."""
    scaling = float(vae.config.scaling_factor)

    def forward(self, latent):  # type: ignore[no-untyped-def]
        return self.model.decode(latent / scaling, return_dict=False)[0]

    return _wrap(vae, forward, "VaeDecoderGraph")


def _wrap(model: Any, forward: Any, name: str) -> Any:
    """An nn.Module holding `model` whose forward is `forward`, in eval mode."""
    base = module_base()

    def __init__(self, inner):  # type: ignore[no-untyped-def]
        base.__init__(self)
        self.model = inner

    cls = type(name, (base,), {"__init__": __init__, "forward": forward})
    return cls(model).eval()


def defaults() -> Defaults:
    """Generation defaults for this family (overridden per embedded model)."""
    return Defaults(steps=25, guidance=9.0, frames=16, height=256, width=256, fps=8)


def default_ranges() -> ShapeRanges:
    """Shape ranges for a user checkpoint: ModelScope 256x256 up to zeroscope 576x320, 8-24 frames."""
    return ShapeRanges(batch=(1, 1, 2), frames=(8, 16, 24), height=(256, 256, 576), width=(256, 256, 576))


def gpu_ranges(vram_gb: float) -> ShapeRanges | None:
    """No family default: every shipped GPU profile has a [shapes.unet3d] table, and a new one names its own."""
    return None


def reference(model_dir: Path) -> Any:
    """diffusers' text-to-video loop over the torch components (build/reference.py), as the oracle."""
    from t2vtrt.build.reference import Unet3dReference

    return Unet3dReference(model_dir)


def create(out_dir: Path, sizes: dict[str, Any], seed: int) -> None:
    """Write a seeded random model of the real classes in diffusers layout (the embedded default)."""
    import torch
    from diffusers import AutoencoderKL, UNet3DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from t2vtrt.build.clip_tokenizer import write_clip_tokenizer

    quiet_loaders()
    text, unet, vae = sizes["text_encoder"], sizes["unet"], sizes["vae"]
    torch.manual_seed(seed)
    CLIPTextModel(CLIPTextConfig(**text)).save_pretrained(out_dir / "text_encoder")
    torch.manual_seed(seed + 1)
    UNet3DConditionModel(cross_attention_dim=text["hidden_size"], **unet).save_pretrained(out_dir / "unet")
    torch.manual_seed(seed + 2)
    AutoencoderKL(**vae).save_pretrained(out_dir / "vae")
    write_clip_tokenizer(out_dir / "tokenizer" / "tokenizer.json", max_length=text.get("max_position_embeddings", 77))
    (out_dir / "scheduler").mkdir(parents=True, exist_ok=True)
    (out_dir / "scheduler" / "scheduler_config.json").write_text(json.dumps(SCHEDULER_CONFIG, indent=2) + "\n")
    (out_dir / "model_index.json").write_text(
        json.dumps(
            {
                "_class_name": "TextToVideoSDPipeline",
                "text_encoder": ["transformers", "CLIPTextModel"],
                "tokenizer": ["transformers", "CLIPTokenizer"],
                "unet": ["diffusers", "UNet3DConditionModel"],
                "vae": ["diffusers", "AutoencoderKL"],
                "scheduler": ["diffusers", "DDIMScheduler"],
            },
            indent=2,
        )
        + "\n"
    )
