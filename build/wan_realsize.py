"""Wan2.2-TI2V-5B at real size without its weights: the published configs as data, parameter counts from the
real classes built on the meta device, and activation peaks from small probe graphs.

Weights come from `meta_counts`: WanTransformer3DModel, UMT5EncoderModel and AutoencoderKLWan instantiated under
`torch.device("meta")` at the full config (no allocation), each parameter split into GEMM/conv weights (what an
INT8 engine stores at one byte) and the rest (biases, norms, embedding tables, modulation tables: kept 16-bit).

Activations come from `activation_peaks`: a transformer's or VAE's inference peak does not grow with depth, and
at a fixed depth every intermediate tensor's size is an affine function of the width (hidden size, head count,
channel base) with the other sizes held at their real values. So each component is exported twice at one layer
(or the real VAE depth) and two small widths (PROBE_WIDTHS), the live-tensor timeline of each graph is measured by
graph_memory.py at the real input shapes, and each step of the timeline is extrapolated to the real width; the
peak is the maximum of the extrapolated timeline (exact while both probes have the same node order, checked).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from t2vtrt.build.families.spec import ShapeRanges
from t2vtrt.runtime.errors import T2VError

# --------------------------------------------------------------------------- the published configs
# Wan-AI/Wan2.2-TI2V-5B-Diffusers transformer/config.json. Checked against the Wan team's own TI2V-5B config
# (wan/configs/wan_ti2v_5B.py: dim 3072, ffn_dim 14336, freq_dim 256, 24 heads, 30 layers, patch (1, 2, 2),
# qk_norm, cross_attn_norm, eps 1e-6; in/out 48 = the VAE's z_dim; text_dim 4096 = UMT5-XXL's d_model).
# rope_max_seq_len 1024 is diffusers' default (it sizes RoPE tables, no parameters).
TRANSFORMER: dict[str, Any] = {
    "_class_name": "WanTransformer3DModel",
    "patch_size": [1, 2, 2],
    "num_attention_heads": 24,
    "attention_head_dim": 128,
    "in_channels": 48,
    "out_channels": 48,
    "text_dim": 4096,
    "freq_dim": 256,
    "ffn_dim": 14336,
    "num_layers": 30,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "eps": 1e-6,
    "image_dim": None,
    "added_kv_proj_dim": None,
    "rope_max_seq_len": 1024,
}
# Wan-AI/Wan2.2-TI2V-5B-Diffusers vae/config.json (several public copies agree on every value below; the
# 48 latents_mean/latents_std values are omitted: they are config, not parameters, and change no size).
VAE: dict[str, Any] = {
    "_class_name": "AutoencoderKLWan",
    "attn_scales": [],
    "base_dim": 160,
    "decoder_base_dim": 256,
    "dim_mult": [1, 2, 4, 4],
    "dropout": 0.0,
    "in_channels": 12,
    "out_channels": 12,
    "is_residual": True,
    "num_res_blocks": 2,
    "patch_size": 2,
    "scale_factor_spatial": 16,
    "scale_factor_temporal": 4,
    "temperal_downsample": [False, True, True],
    "z_dim": 48,
}
# google/umt5-xxl's encoder as Wan ships it (text_encoder/config.json, UMT5EncoderModel): 24 layers, d_model 4096,
# 64 heads x 64, gated-GELU FFN 10240, vocabulary 256384, 32 relative-position buckets per layer, untied.
TEXT_ENCODER: dict[str, Any] = {
    "architectures": ["UMT5EncoderModel"],
    "model_type": "umt5",
    "d_model": 4096,
    "d_ff": 10240,
    "d_kv": 64,
    "num_heads": 64,
    "num_layers": 24,
    "vocab_size": 256384,
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
    "feed_forward_proj": "gated-gelu",
    "layer_norm_epsilon": 1e-6,
    "tie_word_embeddings": False,
    "pad_token_id": 0,
    "eos_token_id": 1,
    "decoder_start_token_id": 0,
}
SEQ_LEN = 512  # WanPipeline's max_sequence_length: the text encoder always runs 512 tokens
# The two sizes: 480p and 720p at 121 frames (TI2V-5B's default length, 5 s at 24 fps).
RESOLUTIONS: dict[str, tuple[int, int, int]] = {"480p": (480, 832, 121), "720p": (704, 1280, 121)}
COMPONENTS = ("text_encoder", "denoiser", "vae_decoder")
# The graphs probed: the VAE decoder stage is two streaming graphs (the next-chunk one planned as `vae_decoder`).
PROBE_GRAPHS = ("text_encoder", "denoiser", "vae_decoder", "vae_decoder_first")
SPEC_NAMES = {"vae_decoder": "vae_decoder_next", "vae_decoder_first": "vae_decoder"}  # probe graph -> wan spec name
PROBE_VERSION = 2
# Probe widths in units (heads, or 16 VAE channels): two points of each affine size; not 1, which dynamo specialises.
PROBE_WIDTHS = (2, 4)


def write_config_dir(out_dir: Path) -> Path:
    """A weightless Wan2.2-TI2V-5B directory in WanPipeline layout: model_index.json and the component configs only."""
    from t2vtrt.build.families.wan import MODEL_INDEX, SCHEDULER_CONFIG

    out_dir = Path(out_dir)
    files = {
        "transformer/config.json": TRANSFORMER,
        "vae/config.json": VAE,
        "text_encoder/config.json": TEXT_ENCODER,
        "scheduler/scheduler_config.json": SCHEDULER_CONFIG,
        "model_index.json": {**MODEL_INDEX, "expand_timesteps": True},
    }
    for name, data in files.items():
        (out_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (out_dir / name).write_text(json.dumps(data, indent=2) + "\n")
    return out_dir


def is_config_only(model_dir: Path) -> bool:
    """True for a wan directory whose transformer has a config but no weights (plan it from the configs alone)."""
    from t2vtrt.build.families import wan

    model_dir = Path(model_dir)
    return model_dir.is_dir() and wan.detect(model_dir) and not any((model_dir / "transformer").glob("*.safetensors"))


def read_configs(model_dir: Path) -> dict[str, dict[str, Any]]:
    """transformer / vae / text_encoder config.json of a wan directory; one line naming a missing or broken file."""
    out = {}
    for part in ("transformer", "vae", "text_encoder"):
        file = Path(model_dir) / part / "config.json"
        try:
            out[part] = json.loads(file.read_text())
        except (OSError, ValueError) as exc:
            raise T2VError(f"{file} is missing or not JSON ({exc.__class__.__name__}): copy the model's {part}/config.json") from exc
    return out


# --------------------------------------------------------------------------- weights


@dataclass(frozen=True)
class WeightCount:
    """Parameters of one engine: GEMM/conv weights (int8-able) and the rest (kept 16-bit in an INT8 engine)."""

    gemm: int
    other: int

    @property
    def parameters(self) -> int:
        """All parameters."""
        return self.gemm + self.other

    def bytes_at(self, precision: str) -> int:
        """Weight bytes in an engine of this precision (graph_memory.weight_bytes' rule)."""
        if precision == "fp32":
            return 4 * self.parameters
        if precision in ("fp16", "bf16"):
            return 2 * self.parameters
        if precision in ("int8", "fp8"):
            return self.gemm + 2 * self.other
        raise T2VError(f"unknown precision {precision!r}: use fp32, fp16, bf16, int8 or fp8")


def _diffusers_kwargs(config: dict[str, Any]) -> dict[str, Any]:
    """A diffusers config without its bookkeeping keys."""
    return {k: v for k, v in config.items() if not k.startswith("_")}


def meta_modules(configs: dict[str, dict[str, Any]]) -> dict[str, list[Any]]:
    """Per engine the torch modules it holds, built on the meta device (shapes only, nothing allocated)."""
    import torch
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    text = {k: v for k, v in configs["text_encoder"].items() if k not in ("architectures", "model_type")}
    try:
        with torch.device("meta"):
            transformer = WanTransformer3DModel(**_diffusers_kwargs(configs["transformer"]))
            vae = AutoencoderKLWan(**_diffusers_kwargs(configs["vae"]))
            encoder = UMT5EncoderModel(UMT5Config(**text))
    except (TypeError, ValueError) as exc:
        raise T2VError(f"a wan config does not build its class ({exc}): check transformer/, vae/ and text_encoder/config.json") from exc
    # The streaming decoder graphs hold post_quant_conv and the decoder; the encoder half is never exported.
    return {"text_encoder": [encoder], "denoiser": [transformer], "vae_decoder": [vae.post_quant_conv, vae.decoder]}


def count_weights(modules: list[Any]) -> WeightCount:
    """GEMM/conv weights vs the rest, each shared parameter once."""
    import torch

    gemm_types = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)
    seen: set[int] = set()
    gemm = other = 0
    for root in modules:
        for module in root.modules():
            for name, param in module.named_parameters(recurse=False):
                if id(param) in seen:
                    continue
                seen.add(id(param))
                if isinstance(module, gemm_types) and name == "weight":
                    gemm += param.numel()
                else:
                    other += param.numel()
    return WeightCount(gemm, other)


def meta_counts(configs: dict[str, dict[str, Any]]) -> dict[str, WeightCount]:
    """Per engine its parameter counts at the full config."""
    return {name: count_weights(modules) for name, modules in meta_modules(configs).items()}


# --------------------------------------------------------------------------- activations


@dataclass(frozen=True)
class Peak:
    """One component at one shape: extrapolated fp32 activation peak (pointwise chains fused, as TensorRT runs them)
    and I/O bytes, attention scores never written, shapes left unknown, and the peak with every tensor materialised."""

    activation_bytes: int
    io_bytes: int
    fused_attention_bytes: int
    unknown_shapes: int
    unfused_bytes: int = 0
    second_context_bytes: int = 0  # of activation_bytes: a second engine's context (the VAE's first-chunk graph)

    def at(self, precision: str) -> tuple[int, int]:
        """(activations, io) in an engine of `precision`: 16-bit activations below fp32, I/O stays fp32 (the manifest's dtypes)."""
        return (self.activation_bytes if precision == "fp32" else self.activation_bytes // 2), self.io_bytes


def probe_sizes(configs: dict[str, dict[str, Any]]) -> dict[str, tuple[dict[str, dict[str, Any]], float]]:
    """Per component: its probe configs per width (PROBE_WIDTHS, in units) and the real width in those units."""
    t, v, e = configs["transformer"], configs["vae"], configs["text_encoder"]
    dit = {**_diffusers_kwargs(t), "num_layers": 1}
    base = 16
    umt5 = {**{k: x for k, x in e.items() if k not in ("architectures", "model_type")}, "num_layers": 1, "vocab_size": 384}
    kv = int(e["d_kv"])
    return {
        # Width unit: one attention head (head_dim kept); ffn_dim, text_dim, freq_dim and channels stay real.
        "denoiser": ({n: {**dit, "num_attention_heads": n} for n in PROBE_WIDTHS}, float(t["num_attention_heads"])),
        # Width unit: one head of d_kv with d_model = heads x d_kv (UMT5-XXL's 64 x 64 = 4096); d_ff real, vocab cut
        # (the embedding table only sizes weights; its gather output is seq x d_model either way).
        "text_encoder": (
            {n: {**umt5, "num_heads": n, "d_model": n * kv} for n in PROBE_WIDTHS},
            float(e["d_model"]) / kv if int(e["d_model"]) == int(e["num_heads"]) * kv else _refuse_umt5(e),
        ),
        # Width unit: 16 decoder base channels (every decoder channel count is a multiple of it); z_dim, out real.
        "vae_decoder": (
            {n: {**_diffusers_kwargs(v), "decoder_base_dim": n * base, "base_dim": 8} for n in PROBE_WIDTHS},
            float(v.get("decoder_base_dim") or v["base_dim"]) / base,
        ),
    }


def _refuse_umt5(config: dict[str, Any]) -> float:
    """The probe scales d_model with the heads; a config where they differ is not one it can extrapolate."""
    raise T2VError(
        f"text_encoder/config.json: d_model {config['d_model']} != num_heads {config['num_heads']} x d_kv {config['d_kv']}: "
        "the real-size plan extrapolates UMT5 widths only when they are equal (as in UMT5-XXL)"
    )


def _probe_key(configs: dict[str, dict[str, Any]]) -> str:
    """A digest of what the probe graphs depend on."""
    text = json.dumps({"v": PROBE_VERSION, "configs": configs}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def probe_graphs(configs: dict[str, dict[str, Any]], work_dir: Path) -> dict[str, dict[int, tuple[Path, dict[str, Any]]]]:
    """Export (once per config digest) the probe graphs; per component and width: (graph path, its family config)."""
    folder = Path(work_dir) / f"probe-{_probe_key(configs)}"
    index = folder / "probe.json"
    if index.is_file():
        data = json.loads(index.read_text())
        return {c: {int(w): (folder / p, cfg) for w, (p, cfg) in by.items()} for c, by in data.items()}
    out: dict[str, dict[int, tuple[Path, dict[str, Any]]]] = {}
    sizes = probe_sizes(configs)
    for graph in PROBE_GRAPHS:
        widths = sizes[graph if graph in sizes else "vae_decoder"][0]
        out[graph] = {w: _export_probe(graph, cfg, configs, folder / f"{graph}.w{w}.onnx") for w, cfg in widths.items()}
    index.write_text(json.dumps({c: {w: (p.name, cfg) for w, (p, cfg) in by.items()} for c, by in out.items()}, indent=1))
    return out


def _export_probe(component: str, probe: dict[str, Any], configs: dict[str, dict[str, Any]], path: Path) -> tuple[Path, dict[str, Any]]:
    """Export one small-width graph with the family's wrappers and dynamic axes; returns it and its family config."""
    import torch
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    from t2vtrt.build.export import export_component
    from t2vtrt.build.families import wan

    torch.manual_seed(0)
    family_cfg = _family_config(configs)
    if component == "denoiser":
        module = wan.denoiser_graph(WanTransformer3DModel(**probe).eval())
        family_cfg["text_dim"] = int(probe["text_dim"])  # the DiT's context width (UMT5's d_model in a real model)
    elif component == "text_encoder":
        module = wan.text_encoder_graph(UMT5EncoderModel(UMT5Config(**probe)).eval(), int(probe.get("pad_token_id", 0)))
        family_cfg.update(text_dim=int(probe["d_model"]), vocab_size=int(probe["vocab_size"]))
    else:
        vae = AutoencoderKLWan(**probe).eval()
        z_dim = int(probe["z_dim"])
        vae.register_to_config(latents_mean=[0.0] * z_dim, latents_std=[1.0] * z_dim)  # values change no size
        first, following = wan.vae_decoder_graphs(vae)
        module = first if component == "vae_decoder_first" else following
        family_cfg["vae_caches"] = wan.vae_cache_layout(first)
    spec = wan.component_specs(family_cfg, PROBE_RANGES)[SPEC_NAMES.get(component, component)]
    export_component(module, spec, path, exporter=wan.EXPORTER, opset=wan.OPSET)
    return path, family_cfg


# Export-time ranges: traced at 5 frames of 64x64 (two latent frames, 2x2 patches), dynamic up to 121 frames of
# 704x1280 (the analysis sets the real shapes; the graphs are never run).
PROBE_RANGES = ShapeRanges(batch=(1, 1, 1), frames=(1, 5, 121), height=(32, 64, 704), width=(32, 64, 1280))


def _family_config(configs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """export.json's `config` for the real model (what wan.component_specs reads), from the configs alone."""
    from t2vtrt.build.families.wan import SCHEDULER_CONFIG

    t, v, e = configs["transformer"], configs["vae"], configs["text_encoder"]
    patch = [int(p) for p in t["patch_size"]]
    return {
        "text_dim": int(e["d_model"]),
        "vocab_size": int(e["vocab_size"]),
        "seq_len": SEQ_LEN,
        "latent_channels": int(v["z_dim"]),
        "out_channels": int(t["out_channels"]),
        "patch_size": patch,
        "spatial_factor": int(v["scale_factor_spatial"]),
        "temporal_factor": int(v["scale_factor_temporal"]),
        "vae_out_channels": 3,
        "num_train_timesteps": int(SCHEDULER_CONFIG["num_train_timesteps"]),
        "vae_caches": [],
    }


def max_shapes(component: str, family_cfg: dict[str, Any], resolution: tuple[int, int, int], batch: int = 1) -> dict[str, tuple[int, ...]]:
    """The graph's input shapes at one height x width x frames (CFG doubles the text encoder and DiT batch)."""
    from t2vtrt.build.engines.plan import input_profiles
    from t2vtrt.build.families import wan

    h, w, f = resolution
    ranges = ShapeRanges(batch=(batch,) * 3, frames=(f,) * 3, height=(h,) * 3, width=(w,) * 3)
    spec = wan.component_specs(family_cfg, ranges)[SPEC_NAMES.get(component, component)].to_json()
    return {k: tuple(v[2]) for k, v in input_profiles(spec).items()}


def activation_peaks(
    configs: dict[str, dict[str, Any]], work_dir: Path, resolutions: dict[str, tuple[int, int, int]] = RESOLUTIONS
) -> dict[str, dict[str, Peak]]:
    """Per resolution and component, the real-width peak extrapolated from the probes (the VAE stage: both streaming graphs)."""
    graphs = probe_graphs(configs, work_dir)
    real = {c: scale for c, (_, scale) in probe_sizes(configs).items()}
    out: dict[str, dict[str, Peak]] = {}
    for label, resolution in resolutions.items():
        found = {g: _extrapolated(graphs[g], real[g if g in real else "vae_decoder"], g, resolution) for g in PROBE_GRAPHS}
        out[label] = {c: found[c] for c in COMPONENTS}
        out[label]["vae_decoder"] = _both_streaming(found["vae_decoder"], found["vae_decoder_first"])
    return out


def _both_streaming(following: Peak, first: Peak) -> Peak:
    """The decode stage holds both streaming engines, each with its own context memory; I/O is one call's (the next graph's)."""
    return Peak(
        following.activation_bytes + first.activation_bytes,
        max(following.io_bytes, first.io_bytes),
        following.fused_attention_bytes + first.fused_attention_bytes,
        following.unknown_shapes + first.unknown_shapes,
        following.unfused_bytes + first.unfused_bytes,
        first.activation_bytes,
    )


def _extrapolated(graphs: dict[int, tuple[Path, dict[str, Any]]], width: float, component: str, resolution: tuple[int, int, int]) -> Peak:
    """Each timeline step (and the I/O) as a + b * width through the two probes; the peak of the result."""
    from t2vtrt.build.engines.graph_memory import graph_timeline

    measured = {}
    for w, (path, cfg) in graphs.items():
        measured[w] = graph_timeline(path, max_shapes(component, cfg, resolution), skip_attention=True)
    (lo, one), (hi, two) = sorted(measured.items())
    if [op for op, _ in one.steps] != [op for op, _ in two.steps]:
        raise T2VError(f"the {component} probe graphs at widths {lo} and {hi} differ in node order: the real-size plan cannot extrapolate them")

    def line(a: float, b: float) -> int:
        return int(round(a + (b - a) * (width - lo) / (hi - lo)))

    def peak(lo_steps: list[tuple[str, int]], hi_steps: list[tuple[str, int]]) -> int:
        return max((line(a, b) for (_, a), (_, b) in zip(lo_steps, hi_steps)), default=0)

    return Peak(
        peak(one.fused_steps, two.fused_steps),
        line(one.io_bytes, two.io_bytes),
        line(one.fused, two.fused),
        one.unknown + two.unknown,
        peak(one.steps, two.steps),
    )
