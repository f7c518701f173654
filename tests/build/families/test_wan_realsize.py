"""Wan2.2-TI2V-5B planned from its configs alone: parameter counts against a hand computation from the config's
numbers, the plan's load/unload choices against hand-computed needs, the probe's extrapolation, the CLI, and
no unknown shapes left in wan-tiny's dynamo graphs."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from t2vtrt.build import wan_realsize
from t2vtrt.build.artifacts import ArtifactPaths
from t2vtrt.build.engines.config_plan import plan_resolution
from t2vtrt.build.gpus.profiles import load_profile
from t2vtrt.build.wan_realsize import TEXT_ENCODER, TRANSFORMER, VAE, Peak, WeightCount

GIB, MIB = 1 << 30, 1 << 20
CONFIGS = {"transformer": TRANSFORMER, "vae": VAE, "text_encoder": TEXT_ENCODER}


# --------------------------------------------------------------------------- the hand computation
# (gemm, other): GEMM / conv weights, then biases, norm gains, embedding and modulation tables.


def _dit_by_hand(c: dict[str, Any]) -> tuple[int, int]:
    """WanTransformer3DModel: patch conv, time/text embedders, time projection to 6 modulations, blocks, output."""
    d = c["num_attention_heads"] * c["attention_head_dim"]  # 24 x 128 = 3072
    f, t, q = c["ffn_dim"], c["text_dim"], c["freq_dim"]
    p = c["patch_size"][0] * c["patch_size"][1] * c["patch_size"][2]
    gemm = c["in_channels"] * p * d  # patch_embedding Conv3d
    gemm += q * d + d * d  # time_embedder linear_1, linear_2
    gemm += d * 6 * d  # time_proj
    gemm += t * d + d * d  # text_embedder linear_1, linear_2
    gemm += c["num_layers"] * (2 * 4 * d * d + 2 * d * f)  # per block: attn1 + attn2 q/k/v/out, ffn up + down
    gemm += d * c["out_channels"] * p  # proj_out
    other = d + 2 * d + 6 * d + 2 * d  # biases: patch conv, time_embedder x2, time_proj, text_embedder x2
    # per block: 2 attentions x (4 biases + q/k RMS norm gains), norm2's affine LayerNorm, ffn biases, scale_shift_table
    other += c["num_layers"] * (2 * (4 * d + 2 * d) + 2 * d + (f + d) + 6 * d)
    other += c["out_channels"] * p + 2 * d  # proj_out bias, output scale_shift_table
    return gemm, other


def _umt5_by_hand(c: dict[str, Any]) -> tuple[int, int]:
    """UMT5EncoderModel: shared embedding; per layer q/k/v/o, gated FFN (wi_0, wi_1, wo), own relative bias, two RMS norms."""
    d, inner, ff = c["d_model"], c["num_heads"] * c["d_kv"], c["d_ff"]
    gemm = c["num_layers"] * (4 * d * inner + 3 * d * ff)
    other = c["vocab_size"] * d + c["num_layers"] * (c["relative_attention_num_buckets"] * c["num_heads"] + 2 * d) + d
    return gemm, other


def _vae_decoder_by_hand(c: dict[str, Any]) -> tuple[int, int]:
    """post_quant_conv + WanDecoder3d (residual up blocks, one attention in the middle), conv weights vs biases and gains."""
    total = [0, 0]

    def add(gemm: int, other: int) -> None:
        total[0] += gemm
        total[1] += other

    def res(i: int, o: int) -> None:  # RMS(i), conv3 i->o, RMS(o), conv3 o->o, 1x1 shortcut when i != o
        add(27 * i * o + 27 * o * o + (i * o if i != o else 0), i + o + o + o + (o if i != o else 0))

    z, base, mult = c["z_dim"], c["decoder_base_dim"], c["dim_mult"]
    dims = [base * m for m in [mult[-1], *mult[::-1]]]  # 1024, 1024, 1024, 512, 256
    temporal = c["temperal_downsample"][::-1]
    add(z * z, z)  # post_quant_conv 1x1x1
    add(27 * z * dims[0], dims[0])  # conv_in
    res(dims[0], dims[0])  # mid block: res, attention, res
    add(3 * dims[0] ** 2 + dims[0] ** 2, dims[0] + 3 * dims[0] + dims[0])
    res(dims[0], dims[0])
    for i, (cin, cout) in enumerate(zip(dims[:-1], dims[1:])):
        res(cin, cout)
        for _ in range(c["num_res_blocks"]):
            res(cout, cout)
        if i != len(mult) - 1:  # upsampler: 3x3 Conv2d, plus a (3,1,1) time conv doubling channels when temporal
            add(9 * cout * cout, cout)
            if temporal[i]:
                add(3 * cout * 2 * cout, 2 * cout)
    add(27 * dims[-1] * c["out_channels"], dims[-1] + c["out_channels"])  # norm_out gain, conv_out
    return total[0], total[1]


HAND = {
    "denoiser": WeightCount(*_dit_by_hand(TRANSFORMER)),
    "text_encoder": WeightCount(*_umt5_by_hand(TEXT_ENCODER)),
    "vae_decoder": WeightCount(*_vae_decoder_by_hand(VAE)),
}


def test_meta_device_counts_match_the_hand_computation() -> None:
    """The real classes on the meta device count what the config's numbers say, per engine, GEMM and the rest."""
    assert wan_realsize.meta_counts(CONFIGS) == HAND
    # The published sizes: a 5.0B DiT, the 5.7B UMT5-XXL encoder (11.4 GB in 16 bits), a 0.56B decoder.
    assert HAND["denoiser"].parameters == 4_999_787_712
    assert HAND["text_encoder"].parameters == 5_680_910_336
    assert 0.55e9 < HAND["vae_decoder"].parameters < 0.56e9


def test_bytes_per_precision_follow_the_engine_rule() -> None:
    """fp32 4 B, fp16/bf16 2 B, int8 1 B per GEMM weight and 2 B for the rest (graph_memory.weight_bytes' rule)."""
    te = HAND["text_encoder"]
    assert te.bytes_at("bf16") == 2 * 5_680_910_336 == 11_361_820_672  # the "UMT5-XXL is 11.4 GB"
    assert te.bytes_at("int8") == te.gemm + 2 * 256384 * 4096 + 2 * (te.other - 256384 * 4096)
    dit = HAND["denoiser"]
    assert (dit.bytes_at("fp32"), dit.bytes_at("fp16"), dit.bytes_at("int8")) == (4 * dit.parameters, 2 * dit.parameters, dit.gemm + 2 * dit.other)


# Activation peaks given, not measured here (the probe has its own test): fp32 bytes and fp32 I/O.
PEAKS = {
    "text_encoder": Peak(256 * MIB, 16 * MIB, 0, 0),
    "denoiser": Peak(4 * GIB, 50 * MIB, 0, 0),
    "vae_decoder": Peak(2 * GIB, 5 * GIB, 0, 0),
}


def _need(component: str, precision: str, engines: int = 1) -> int:
    """Hand-computed device need: engines x weights + half the fp32 activations below fp32 + fp32 I/O."""
    peak = PEAKS[component]
    return engines * HAND[component].bytes_at(precision) + peak.activation_bytes // 2 + peak.io_bytes


def test_rtx3060_runs_umt5_first_in_bf16_then_an_int8_denoiser() -> None:
    """12 GiB less 1 reserved: UMT5 BF16 (10.72 GiB) fits alone; the FP16 DiT (9.31 GiB + 2 GiB) does not, INT8 does."""
    plan = plan_resolution(load_profile("rtx3060"), "480p", (480, 832, 121), HAND, PEAKS, low_vram=False)
    assert plan.mode == "low_vram" and plan.budget == 11 * GIB
    stages = {s.component: s for s in plan.stages}
    assert _need("denoiser", "fp16") > 11 * GIB
    assert (stages["text_encoder"].placement, stages["text_encoder"].precision) == ("gpu", "bf16")
    assert stages["text_encoder"].need == _need("text_encoder", "bf16")
    assert stages["denoiser"].precision == "int8" and stages["denoiser"].need == _need("denoiser", "int8")
    assert stages["vae_decoder"].need == _need("vae_decoder", "fp16", engines=2)
    assert plan.required == max(_need("text_encoder", "bf16"), _need("denoiser", "int8"), _need("vae_decoder", "fp16", 2))
    assert plan.fits


def test_rtx4060_moves_umt5_to_the_cpu_and_names_what_would_fit() -> None:
    """8 GiB: UMT5 leaves the GPU (its weight-only INT8 size is named), the DiT runs INT8, the fp32-cache VAE does not fit."""
    plan = plan_resolution(load_profile("rtx4060"), "480p", (480, 832, 121), HAND, PEAKS, low_vram=False)
    stages = {s.component: s for s in plan.stages}
    assert (stages["text_encoder"].placement, stages["text_encoder"].need) == ("cpu", 0)
    assert stages["text_encoder"].weights == 4 * HAND["text_encoder"].parameters  # host RAM at fp32
    assert stages["denoiser"].precision == "int8"
    assert not plan.fits and plan.required == _need("vae_decoder", "fp16", 2) > 7 * GIB
    assert any("weight-only INT8" in a for a in plan.alternatives) and any(a.startswith("vae_decoder needs") for a in plan.alternatives)
    assert any("runs on the CPU" in n for n in plan.notes)


def test_rtx4090_runs_every_stage_in_16_bits() -> None:
    """24 GiB: the three stages do not fit resident together (30+ GiB), each fits alone in 16 bits."""
    plan = plan_resolution(load_profile("rtx4090"), "720p", (704, 1280, 121), HAND, PEAKS, low_vram=False)
    assert plan.mode == "low_vram" and plan.fits
    assert [(s.placement, s.precision) for s in plan.stages] == [("gpu", "bf16"), ("gpu", "fp16"), ("gpu", "fp16")]


def test_probe_extrapolation_is_exact_at_another_width(tmp_path: Path) -> None:
    """A small DiT's peak extrapolated from the probes at 2 and 4 heads equals the peak measured on an 8-head export."""
    from t2vtrt.build.engines.graph_memory import graph_timeline

    small = {
        **CONFIGS,
        "transformer": {**TRANSFORMER, "num_attention_heads": 8, "attention_head_dim": 16, "ffn_dim": 96, "text_dim": 64, "freq_dim": 32},
    }
    small["text_encoder"] = {**TEXT_ENCODER, "d_model": 128, "num_heads": 2}
    widths, real = wan_realsize.probe_sizes(small)["denoiser"]
    graphs = {w: wan_realsize._export_probe("denoiser", cfg, small, tmp_path / f"d{w}.onnx") for w, cfg in widths.items()}
    resolution = (128, 192, 9)
    predicted = wan_realsize._extrapolated(graphs, real, "denoiser", resolution)
    path, cfg = wan_realsize._export_probe("denoiser", {**widths[2], "num_attention_heads": 8}, small, tmp_path / "d8.onnx")
    measured = graph_timeline(path, wan_realsize.max_shapes("denoiser", cfg, resolution), skip_attention=True)
    assert predicted.activation_bytes == max(live for _, live in measured.fused_steps) and predicted.io_bytes == measured.io_bytes
    assert predicted.unfused_bytes == max(live for _, live in measured.steps) > predicted.activation_bytes  # tanh-GELU's chain
    assert predicted.unknown_shapes == 0


def test_cli_plans_a_weightless_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """`t2vtrt engines --model <configs only> --gpu rtx4060 --dry-run`: both resolutions printed and in plan.json."""
    from t2vtrt.cli import main

    model = wan_realsize.write_config_dir(tmp_path / "Wan2.2-TI2V-5B-Diffusers")
    assert wan_realsize.is_config_only(model)
    monkeypatch.setattr(wan_realsize, "activation_peaks", lambda configs, work: {label: PEAKS for label in wan_realsize.RESOLUTIONS})
    args = ["t2vtrt", "engines", "--model", str(model), "--artifacts", str(tmp_path / "art"), "--gpu", "rtx4060", "--dry-run"]
    monkeypatch.setattr(sys, "argv", args)
    main()
    out = capsys.readouterr().out
    assert "rtx4060 (8 GiB" in out and "at 720p 704x1280x121" in out and "cpu fp32" in out
    plan = json.loads((tmp_path / "art" / model.name / "engines" / "rtx4060" / "plan.json").read_text())
    assert set(plan["resolutions"]) == {"480p", "720p"}
    assert plan["resolutions"]["480p"]["components"]["text_encoder"]["weights_bytes"]["bf16"] == 11_361_820_672


def test_cli_refuses_to_build_a_weightless_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Without --dry-run there is nothing to build: one line naming the missing weights and the dry run."""
    from t2vtrt.cli import main

    model = wan_realsize.write_config_dir(tmp_path / "w")
    monkeypatch.setattr(sys, "argv", ["t2vtrt", "engines", "--model", str(model), "--artifacts", str(tmp_path), "--gpu", "rtx3060"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and "--dry-run" in err and "no weights" in err


def test_wan_tiny_graphs_leave_no_shape_unknown(wan_paths: ArtifactPaths) -> None:
    """The dynamo-exported DiT (RoPE grids, reshapes from Shape nodes) and the other graphs: every shape inferred."""
    from t2vtrt.build.engines.plan import make_plan

    plan = make_plan(wan_paths, load_profile("rtx3060")).to_json()
    assert {name: c["unknown_shapes"] for name, c in plan["components"].items()} == dict.fromkeys(plan["components"], 0)


def test_pointwise_chains_are_not_materialised() -> None:
    """MatMul -> Add(bias) -> Tanh -> Mul -> MatMul: the bias and Tanh outputs live inside one fused kernel."""
    from onnx import TensorProto, helper

    from t2vtrt.build.engines.graph_memory import pointwise_internal

    nodes = [
        helper.make_node("MatMul", ["X", "W"], ["mm"]),
        helper.make_node("Add", ["mm", "b"], ["biased"]),
        helper.make_node("Tanh", ["biased"], ["t"]),
        helper.make_node("Mul", ["t", "biased"], ["gated"]),
        helper.make_node("MatMul", ["gated", "W"], ["out"]),
    ]
    floats = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 2]) for n in ("X", "out")]
    inits = [helper.make_tensor("W", TensorProto.FLOAT, [2, 2], [1.0] * 4), helper.make_tensor("b", TensorProto.FLOAT, [2], [0.0] * 2)]
    model = helper.make_model(helper.make_graph(nodes, "g", floats[:1], floats[1:], inits))
    assert pointwise_internal(model) == {"biased", "t"}
