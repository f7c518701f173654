"""The `wan` family: Wan2.1 / Wan2.2 text-to-video in diffusers' WanPipeline layout.

diffusers WanTransformer3DModel (a DiT) + transformers UMT5EncoderModel + AutoencoderKLWan, a causal video
VAE decoded as a stream: one graph for the first latent frame, one for every later frame, the causal-conv
caches passed between them as graph inputs and outputs. Flow-matching velocity prediction, UniPC with flow
sigmas by default. torch/diffusers/transformers are imported inside functions only (the registry stays cheap).
"""

from __future__ import annotations

import json
import re
import string
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

NAME = "wan"
EXPORTER = "dynamo"  # TorchScript fails on aten::rms_norm and nearest-exact upsampling (measured)
OPSET = 18
COMPONENTS = ("text_encoder", "denoiser", "vae_decoder", "vae_decoder_next")
CACHE_T = 2  # frames every causal-conv cache holds (diffusers' CACHE_T); shorter caches are zero-padded in front
LAYOUT = {
    "transformer": "WanTransformer3DModel",
    "vae": "AutoencoderKLWan",
    "text_encoder": "UMT5EncoderModel",
    "scheduler": "UniPCMultistepScheduler",
}

# Wan2.2-TI2V-5B's scheduler: UniPC on flow sigmas shifted by 5 (its scheduler_config.json).
SCHEDULER_CONFIG: dict[str, Any] = {
    "_class_name": "UniPCMultistepScheduler",
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "solver_order": 2,
    "prediction_type": "flow_prediction",
    "use_flow_sigmas": True,
    "flow_shift": 5.0,
    "predict_x0": True,
    "solver_type": "bh2",
    "lower_order_final": True,
    "disable_corrector": [],
    "final_sigmas_type": "zero",
    "timestep_spacing": "linspace",
    "steps_offset": 0,
    "thresholding": False,
}

# Surgery per component: the shared default list (build/surgery/registry.py's DEFAULT_PIPELINE) for every
# graph; the DiT has no GEGLU and its attention scale sits inside SDPA, so the unet3d denoiser passes do not apply.
_DEFAULT = ("cleanup", "remove_identity", "fold_constants", "fold_casts", "onehot_to_gather", "cleanup")
SURGERY: dict[str, tuple[str, ...]] = {name: _DEFAULT for name in COMPONENTS}

# What the seeds and ModelOpt's Wan recipe keep high-precision: the patch embedding, the time/text condition
# embedders and the output projection. A pattern matches a node name containing it (or an op type equal to it).
SENSITIVE_LAYERS = (
    "/model/patch_embedding/",
    "/model/condition_embedder/",
    "/model/proj_out/",
    "Softmax",
)

# Layer groups for the INT8 sweep: per DiT block, self-attention (attn1), cross-attention (attn2) and the FFN.
# Node names are module paths, '/model/blocks.3/attn2/to_k/MatMul': export names dynamo's nodes so
# (build/export.py name_nodes) from the module scopes it records.
BLOCK_PATTERN = r"^/model/(blocks\.\d+)/"
LAYER_KINDS = (
    ("self_attention", r"^/model/blocks\.\d+/attn1/"),
    ("cross_attention", r"^/model/blocks\.\d+/attn2/"),
    ("ffn", r"^/model/blocks\.\d+/ffn/"),
    # adaLN around the three: the norms, the time modulation's scale/shift/gate and the residual adds (ModelOpt
    # places Q/DQ on these elementwise ops too; a group of their own keeps them out of "other").
    ("modulation", r"^/model/blocks\.\d+/(?:norm\d+/|Mul|Add)"),
)


# model_index.json of the layout (expand_timesteps: TI2V-5B's per-token timesteps, set per model).
MODEL_INDEX: dict[str, Any] = {
    "_class_name": "WanPipeline",
    "text_encoder": ["transformers", "UMT5EncoderModel"],
    "tokenizer": ["transformers", "T5TokenizerFast"],
    "transformer": ["diffusers", "WanTransformer3DModel"],
    "vae": ["diffusers", "AutoencoderKLWan"],
    "scheduler": ["diffusers", "UniPCMultistepScheduler"],
}


def detect(model_dir: Path) -> bool:
    """True when the directory holds a WanTransformer3DModel in diffusers layout."""
    return class_name(model_dir / "transformer" / "config.json") == LAYOUT["transformer"]


def check_layout(model_dir: Path) -> None:
    """Refuse a directory missing a component or holding the wrong class, naming it and the fix."""
    for part in ("transformer", "vae", "text_encoder", "tokenizer", "scheduler"):
        if not (model_dir / part).is_dir():
            raise T2VError(
                f"model directory {model_dir} has no {part}/ folder: a wan model needs transformer/, vae/, "
                "text_encoder/, tokenizer/ and scheduler/ (diffusers WanPipeline layout, e.g. Wan2.2-TI2V-5B-Diffusers)"
            )
    configs = {"transformer": "config.json", "vae": "config.json", "text_encoder": "config.json", "scheduler": "scheduler_config.json"}
    for part, file in configs.items():
        found = class_name(model_dir / part / file)
        if found != LAYOUT[part]:
            raise T2VError(f"{model_dir / part / file} names {found!r}, not {LAYOUT[part]}: pass a diffusers WanPipeline directory")
    if not (model_dir / "tokenizer" / "tokenizer.json").is_file():
        raise T2VError(f"{model_dir / 'tokenizer'} has no tokenizer.json: save the T5 tokenizer as a fast tokenizer (save_pretrained)")


def load_torch(model_dir: Path) -> dict[str, Any]:
    """The raw torch modules (transformer, vae, text_encoder) in eval mode, fp32."""
    quiet_loaders()
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import UMT5EncoderModel

    check_layout(model_dir)
    return {
        "transformer": _diffusers_fp32(WanTransformer3DModel, model_dir / "transformer"),
        "vae": _diffusers_fp32(AutoencoderKLWan, model_dir / "vae"),
        "text_encoder": UMT5EncoderModel.from_pretrained(model_dir / "text_encoder", local_files_only=True).float().eval(),
    }


def _diffusers_fp32(cls: Any, folder: Path) -> Any:
    """A diffusers model built from its config with every safetensors shard loaded, in fp32.

    from_pretrained refuses WanTransformer3DModel without `accelerate` (its _keep_in_fp32_modules need
    low_cpu_mem_usage); every module is fp32 here anyway, so loading the state dict directly is the same.
    """
    from safetensors.torch import load_file

    shards = sorted(folder.glob("*.safetensors"))
    if not shards:
        raise T2VError(f"{folder} has no *.safetensors weights: copy the model's {folder.name}/ folder again")
    model = cls.from_config(cls.load_config(folder))
    state: dict[str, Any] = {}
    for shard in shards:
        state.update({k: v.float() for k, v in load_file(str(shard)).items()})
    # assign=True takes the loaded tensors as the parameters: the randomly initialised ones are freed, not copied into.
    result = model.load_state_dict(state, strict=False, assign=True)
    ignored = [re.compile(p) for p in (getattr(cls, "_keys_to_ignore_on_load_unexpected", None) or [])]
    unexpected = [k for k in result.unexpected_keys if not any(p.search(k) for p in ignored)]
    if result.missing_keys or unexpected:
        problem = f"lacks {result.missing_keys[0]}" if result.missing_keys else f"has an unknown weight {unexpected[0]}"
        raise T2VError(f"the weights in {folder} do not fit its config.json ({problem}): copy the model's {folder.name}/ folder again")
    return model.float().eval()


def load(model_dir: Path, work_dir: Path) -> LoadedModel:
    """Load the components as four export-ready graphs; write the runtime tokenizer.json into work_dir."""
    parts = load_torch(model_dir)
    transformer, vae, text_encoder = parts["transformer"], parts["vae"], parts["text_encoder"]
    scheduler_config = json.loads((model_dir / "scheduler" / "scheduler_config.json").read_text())
    tokenizer_file, max_length, pad_id = _runtime_tokenizer(model_dir / "tokenizer", work_dir)
    spatial = int(vae.config.scale_factor_spatial)
    patch = tuple(int(p) for p in transformer.config.patch_size)
    first, following = vae_decoder_graphs(vae)
    return LoadedModel(
        family=NAME,
        modules={
            "text_encoder": text_encoder_graph(text_encoder, pad_id),
            "denoiser": denoiser_graph(transformer),
            "vae_decoder": first,
            "vae_decoder_next": following,
        },
        tokenizer_file=str(tokenizer_file),
        tokenizer_max_length=max_length,
        tokenizer_pad_id=pad_id,
        scheduler=SchedulerInfo(prediction_type="flow", config=scheduler_config, samplers=("unipc", "flow-euler", "dpm++"), default_sampler="unipc"),
        latent=LatentLayout(
            channels=int(vae.config.z_dim),
            spatial_factor=spatial,
            temporal_factor=int(vae.config.scale_factor_temporal),
            vae_decode="streaming",
            size_multiple=spatial * max(patch[1], patch[2]),  # the DiT patchifies latents: pixels divide by both
        ),
        config={
            "text_dim": int(text_encoder.config.d_model),
            "vocab_size": int(text_encoder.config.vocab_size),
            "seq_len": max_length,
            "latent_channels": int(vae.config.z_dim),
            "out_channels": int(transformer.config.out_channels),
            "patch_size": list(patch),
            "spatial_factor": spatial,
            "temporal_factor": int(vae.config.scale_factor_temporal),
            "vae_out_channels": 3,
            "num_train_timesteps": int(scheduler_config.get("num_train_timesteps", 1000)),
            "vae_caches": vae_cache_layout(first),
        },
    )


def _runtime_tokenizer(tokenizer_dir: Path, work_dir: Path) -> tuple[Path, int, int]:
    """The model's tokenizer.json copied for the runtime, its max length (WanPipeline's 512 when unset) and pad id."""
    config_file = tokenizer_dir / "tokenizer_config.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    max_length = int(config.get("model_max_length", 512))
    if max_length > 4096:  # transformers writes a huge sentinel when the length is unset
        max_length = 512
    out = work_dir / "tokenizer.json"
    out.write_bytes((tokenizer_dir / "tokenizer.json").read_bytes())
    from tokenizers import Tokenizer

    pad_token = config.get("pad_token", "<pad>")
    pad_token = pad_token.get("content", "<pad>") if isinstance(pad_token, dict) else pad_token
    pad_id = Tokenizer.from_file(str(out)).token_to_id(str(pad_token))
    if pad_id is None:
        raise T2VError(f"{tokenizer_dir / 'tokenizer.json'} has no pad token <pad>: a Wan (T5) tokenizer pads with <pad>")
    return out, max_length, int(pad_id)


def component_specs(cfg: dict[str, Any], ranges: ShapeRanges) -> dict[str, ComponentSpec]:
    """Per component: I/O names, dtypes, roles, named axes and their [min, opt, max], from export.json's config alone."""
    factor, temporal = cfg["spatial_factor"], cfg["temporal_factor"]
    seq, z, text_dim = cfg["seq_len"], cfg["latent_channels"], cfg["text_dim"]
    b_lo, b_opt, b_hi = ranges.batch
    cfg_batch = (b_lo, 2 * b_opt, 2 * b_hi)  # classifier-free guidance doubles the text encoder and DiT batch
    lh = tuple(v // factor for v in ranges.height)
    lw = tuple(v // factor for v in ranges.width)
    latent_frames = tuple((f - 1) // temporal + 1 for f in ranges.frames)
    seq_axis = (seq, seq, seq)
    vae_axes: dict[str, Any] = {"batch": ranges.batch, "latent_height": lh, "latent_width": lw, "height": ranges.height, "width": ranges.width}
    caches_in, caches_out = [], []
    for k, (channels, scale) in enumerate(cfg["vae_caches"]):
        h_axis, w_axis = _scaled_axis("latent_height", scale), _scaled_axis("latent_width", scale)
        vae_axes[h_axis] = tuple(v * scale for v in lh)
        vae_axes[w_axis] = tuple(v * scale for v in lw)
        shape = ("batch", channels, CACHE_T, h_axis, w_axis)
        caches_in.append(TensorSpec(f"cache_in_{k}", "float32", shape, role=f"cache:{k}"))
        caches_out.append(TensorSpec(f"cache_out_{k}", "float32", shape, role=f"cache:{k}"))
    latent_chunk = TensorSpec("latent", "float32", ("batch", z, 1, "latent_height", "latent_width"), role="latent")
    frames_first = TensorSpec("frames", "float32", ("batch", cfg["vae_out_channels"], 1, "height", "width"), role="frames")
    frames_next = TensorSpec("frames", "float32", ("batch", cfg["vae_out_channels"], temporal, "height", "width"), role="frames")
    return {
        "text_encoder": ComponentSpec(
            name="text_encoder",
            inputs=(TensorSpec("input_ids", "int32", ("batch", "seq"), (0, cfg["vocab_size"] - 1), role="token_ids"),),
            outputs=(TensorSpec("last_hidden_state", "float32", ("batch", "seq", text_dim), role="context"),),
            axes={"batch": cfg_batch, "seq": seq_axis},
        ),
        "denoiser": ComponentSpec(
            name="denoiser",
            inputs=(
                TensorSpec("hidden_states", "float32", ("batch", z, "frames", "latent_height", "latent_width"), role="latent"),
                TensorSpec("timestep", "float32", ("batch",), (0, cfg["num_train_timesteps"] - 1), role="timestep"),
                TensorSpec("encoder_hidden_states", "float32", ("batch", "seq", text_dim), role="context"),
            ),
            outputs=(
                TensorSpec("noise_pred", "float32", ("batch", cfg["out_channels"], "frames", "latent_height", "latent_width"), role="prediction"),
            ),
            axes={"batch": cfg_batch, "frames": latent_frames, "latent_height": lh, "latent_width": lw, "seq": seq_axis},
        ),
        "vae_decoder": ComponentSpec(name="vae_decoder", inputs=(latent_chunk,), outputs=(frames_first, *caches_out), axes=dict(vae_axes)),
        "vae_decoder_next": ComponentSpec(
            name="vae_decoder_next", inputs=(latent_chunk, *caches_in), outputs=(frames_next, *caches_out), axes=dict(vae_axes)
        ),
    }


def _scaled_axis(axis: str, scale: int) -> str:
    """The name of `axis` times `scale` (a cache at a decoder level `scale` times the latent size)."""
    return axis if scale == 1 else f"{axis}_x{scale}"


def text_encoder_graph(text_encoder: Any, pad_id: int) -> Any:
    """input_ids (int32) -> last_hidden_state with padded rows zeroed, the mask made in-graph as WanPipeline does."""
    base = module_base()

    class TextEncoderGraph(base):  # type: ignore[misc, valid-type]
        """WanPipeline._get_t5_prompt_embeds: attention mask = ids != pad, rows past the prompt set to zero."""

        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.model = inner

        def forward(self, input_ids: Any) -> Any:
            mask = (input_ids != pad_id).to(input_ids.dtype)
            hidden = self.model(input_ids=input_ids, attention_mask=mask, return_dict=False)[0]
            return hidden * mask.unsqueeze(-1).to(hidden.dtype)

    return TextEncoderGraph(text_encoder).eval()


def denoiser_graph(transformer: Any) -> Any:
    """(hidden_states, timestep per sample, encoder_hidden_states) -> flow velocity.

    TI2V-5B's pipeline passes a per-token timestep; for text-to-video every token carries the same value, so
    the scalar-per-sample form computes the same thing without a (batch, tokens) input.
    """
    base = module_base()

    class DenoiserGraph(base):  # type: ignore[misc, valid-type]
        """The DiT with a flat (batch,) float timestep."""

        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.model = inner

        def forward(self, hidden_states: Any, timestep: Any, encoder_hidden_states: Any) -> Any:
            return self.model(hidden_states, timestep, encoder_hidden_states, return_dict=False)[0]

    return DenoiserGraph(transformer).eval()


def vae_decoder_graphs(vae: Any) -> tuple[Any, Any]:
    """The streaming decoder: (first latent frame -> 1 frame + caches, next latent frame + caches -> 4 frames + caches).

    Both reproduce AutoencoderKLWan._decode's per-frame loop: the first call (`first_chunk`, every cache empty,
    temporal upsamplers marked 'Rep' and skipped) and every later one. Caches are padded to CACHE_T frames with
    zeros in front, which the causal convolutions would pad with anyway, so one next graph serves every chunk.
    Latents arrive as the sampler leaves them: de-normalised (latents_mean/std) in-graph.
    """
    import torch

    base = module_base()
    z_dim = int(vae.config.z_dim)
    mean = torch.tensor(vae.config.latents_mean, dtype=torch.float32).view(1, z_dim, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std, dtype=torch.float32).view(1, z_dim, 1, 1, 1)
    slots = int(vae._cached_conv_counts["decoder"])
    used = _used_cache_slots(vae, slots)

    def decode(graph: Any, latent: Any, feat_cache: list[Any], first: bool) -> Any:
        """One chunk through post_quant_conv and the decoder, unpatchified and clamped as _decode does."""
        from diffusers.models.autoencoders.autoencoder_kl_wan import unpatchify

        model = graph.model
        x = model.post_quant_conv(latent * graph.latents_std + graph.latents_mean)
        out = model.decoder(x, feat_cache=feat_cache, feat_idx=[0], first_chunk=first)
        if model.config.patch_size is not None:
            out = unpatchify(out, patch_size=model.config.patch_size)
        return torch.clamp(out, min=-1.0, max=1.0)

    class VaeDecoderFirst(base):  # type: ignore[misc, valid-type]
        """latent frame 0 -> (frames, cache_out_0..n-1)."""

        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.model = inner
            self.register_buffer("latents_mean", mean, persistent=False)
            self.register_buffer("latents_std", std, persistent=False)

        def forward(self, latent: Any) -> tuple[Any, ...]:
            feat_cache: list[Any] = [None] * slots
            frames = decode(self, latent, feat_cache, True)
            return (frames, *_padded_caches(feat_cache, used))

    class VaeDecoderNext(base):  # type: ignore[misc, valid-type]
        """(latent frame i > 0, cache_in_0..n-1) -> (4 frames, cache_out_0..n-1)."""

        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.model = inner
            self.register_buffer("latents_mean", mean, persistent=False)
            self.register_buffer("latents_std", std, persistent=False)

        def forward(self, latent: Any, *caches: Any) -> tuple[Any, ...]:
            feat_cache: list[Any] = [None] * slots
            for slot, cache in zip(used, caches):
                feat_cache[slot] = cache
            frames = decode(self, latent, feat_cache, False)
            return (frames, *(feat_cache[slot] for slot in used))

    first = VaeDecoderFirst(vae).eval()
    return first, VaeDecoderNext(vae).eval()


def _used_cache_slots(vae: Any, slots: int) -> list[int]:
    """The decoder's feat_cache slots a chunk writes (1x1 shortcut convolutions own a slot but never use it)."""
    import torch

    feat_cache: list[Any] = [None] * slots
    z = torch.zeros(1, int(vae.config.z_dim), 1, 2, 2)
    with torch.inference_mode():
        vae.decoder(vae.post_quant_conv(z), feat_cache=feat_cache, feat_idx=[0], first_chunk=True)
    return [i for i, c in enumerate(feat_cache) if c is not None]


def _padded_caches(feat_cache: list[Any], used: list[int]) -> list[Any]:
    """The first chunk's caches as CACHE_T-frame tensors: zeros in front; a skipped upsampler ('Rep') all zeros.

    A 'Rep' slot belongs to a temporal upsampler, whose input is the previous slot's input (the block's last
    residual conv2 input: same channels and size), so its zero cache takes that shape.
    """
    import torch

    out = []
    for slot in used:
        cache = feat_cache[slot]
        if isinstance(cache, str):  # "Rep": the upsampler ran no time conv on the first chunk
            cache = torch.zeros_like(feat_cache[slot - 1][:, :, -1:])
        if cache.shape[2] < CACHE_T:
            pad = torch.zeros_like(cache[:, :, :1]).expand(-1, -1, CACHE_T - cache.shape[2], -1, -1)
            cache = torch.cat([pad, cache], dim=2)
        out.append(cache)
    return out


def vae_cache_layout(first: Any) -> list[list[int]]:
    """Per cache: [channels, scale], its spatial size being `scale` times the latent's (from one tiny decode)."""
    import torch

    lh, lw = 2, 3
    latent = torch.zeros(1, int(first.model.config.z_dim), 1, lh, lw)
    with torch.inference_mode():
        outputs = first(latent)
    layout = []
    for cache in outputs[1:]:
        scale = cache.shape[3] // lh
        if cache.shape[3] != lh * scale or cache.shape[4] != lw * scale or cache.shape[2] != CACHE_T:
            raise T2VError(f"a Wan VAE decoder cache has shape {tuple(cache.shape)} for a {lh}x{lw} latent: not a whole multiple")
        layout.append([int(cache.shape[1]), int(scale)])
    return layout


def defaults() -> Defaults:
    """Generation defaults for a user checkpoint (Wan2.2-TI2V-5B: 704x1280, 121 frames at 24 fps, 50 steps, CFG 5)."""
    return Defaults(steps=50, guidance=5.0, frames=121, height=704, width=1280, fps=24)


def default_ranges() -> ShapeRanges:
    """Shape ranges for a user checkpoint: 480p to 720p, 1 to 121 frames (1 mod 4)."""
    return ShapeRanges(batch=(1, 1, 1), frames=(1, 81, 121), height=(480, 704, 704), width=(832, 1280, 1280))


def gpu_ranges(vram_gb: float) -> ShapeRanges | None:
    """The family's shape profile for a GPU of `vram_gb` without a [shapes.wan] table: 480p under 16 GB, else 720p."""
    if vram_gb < 16:
        return ShapeRanges(batch=(1, 1, 1), frames=(1, 81, 121), height=(480, 480, 480), width=(832, 832, 832))
    return ShapeRanges(batch=(1, 1, 1), frames=(1, 121, 121), height=(480, 704, 704), width=(832, 1280, 1280))


def reference(model_dir: Path) -> Any:
    """diffusers' WanPipeline over the model's torch weights (build/reference.py), as the oracle."""
    from t2vtrt.build.reference import WanReference

    return WanReference(model_dir, load_torch(model_dir))


def create(out_dir: Path, sizes: dict[str, Any], seed: int) -> None:
    """Write a seeded random model of the real classes in WanPipeline's diffusers layout (wan-tiny)."""
    import torch
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    quiet_loaders()
    seq_len = int(sizes["seq_len"])
    vocab = write_t5_tokenizer(out_dir / "tokenizer", seq_len)
    text = {**sizes["text_encoder"], "vocab_size": vocab, "pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0}
    torch.manual_seed(seed)
    UMT5EncoderModel(UMT5Config(**text)).save_pretrained(out_dir / "text_encoder")
    torch.manual_seed(seed + 1)
    WanTransformer3DModel(text_dim=text["d_model"], **sizes["transformer"]).save_pretrained(out_dir / "transformer")
    torch.manual_seed(seed + 2)
    vae = {k: list(v) if isinstance(v, tuple) else v for k, v in sizes["vae"].items()}  # diffusers concatenates lists
    generator = torch.Generator().manual_seed(seed + 3)
    z_dim = int(vae["z_dim"])
    # Statistics of the latent space as a trained VAE records them (here random, positive std).
    vae.setdefault("latents_mean", (torch.randn(z_dim, generator=generator) * 0.5).tolist())
    vae.setdefault("latents_std", (torch.rand(z_dim, generator=generator) + 0.5).tolist())
    AutoencoderKLWan(**vae).save_pretrained(out_dir / "vae")
    (out_dir / "scheduler").mkdir(parents=True, exist_ok=True)
    (out_dir / "scheduler" / "scheduler_config.json").write_text(json.dumps(SCHEDULER_CONFIG, indent=2) + "\n")
    index = {**MODEL_INDEX, "expand_timesteps": bool(sizes.get("expand_timesteps", False))}
    (out_dir / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")


# A few common words as whole pieces, so prompts are not all single characters.
_WORDS = (
    "the a an of on in to and with moving left right up down over under red green blue yellow white black "
    "circle square triangle light dark background cat dog video slowly fast camera scene sky water"
).split()


def t5_unigram() -> Any:
    """A deterministic T5-style Unigram tokenizer: <pad>=0, </s>=1, <unk>=2, characters and common words, '</s>' appended."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    pieces: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -3.0)]
    for ch in string.ascii_letters + string.digits + string.punctuation:
        pieces += [(ch, -10.0), ("\u2581" + ch, -9.0)]
    pieces += [("\u2581" + w, -4.0 - 0.01 * i) for i, w in enumerate(_WORDS)]
    tok = Tokenizer(models.Unigram(pieces, unk_id=2, byte_fallback=False))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)])
    return tok


def write_t5_tokenizer(folder: Path, max_length: int) -> int:
    """Save the Unigram tokenizer as a transformers T5 fast tokenizer (tokenizer.json + config); returns the vocab size."""
    from transformers import T5TokenizerFast

    tok = t5_unigram()
    fast = T5TokenizerFast(tokenizer_object=tok, eos_token="</s>", unk_token="<unk>", pad_token="<pad>", extra_ids=0, model_max_length=max_length)
    folder.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(folder)
    return int(tok.get_vocab_size())
