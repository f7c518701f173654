"""The wan family on wan-tiny: each graph against PyTorch, the streaming VAE against diffusers' decode, the layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from t2vtrt.build.artifacts import ArtifactPaths
from t2vtrt.build.export import export_shapes, sample_inputs
from t2vtrt.build.families import detect_family, get_family, wan
from t2vtrt.build.families.spec import ShapeRanges
from t2vtrt.runtime.errors import T2VError

# fp32 ONNX Runtime vs fp32 PyTorch: kernel order only (measured max rel 1.5e-6 on wan-tiny).
MAX_REL = 1e-5
GRAPHS = ("text_encoder", "denoiser", "vae_decoder", "vae_decoder_next")


def _session(path: Path) -> ort.InferenceSession:
    """An ONNX Runtime CPU session."""
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _run_torch(module, spec, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:  # type: ignore[no-untyped-def]
    """The torch graph's outputs, as a list, on the same feeds."""
    with torch.inference_mode():
        out = module(*(torch.from_numpy(feeds[t.name]) for t in spec.inputs))
    return [o.numpy() for o in ((out,) if isinstance(out, torch.Tensor) else out)]


def _max_rel(actual: np.ndarray, expected: np.ndarray) -> float:
    """Max abs difference over the reference's max abs."""
    return float(np.abs(actual - expected).max() / max(np.abs(expected).max(), 1e-12))


@pytest.mark.parametrize("kind", ["", "opt"])
@pytest.mark.parametrize("component", GRAPHS)
def test_wan_graph_matches_torch(wan_loaded, wan_paths: ArtifactPaths, component: str, kind: str) -> None:  # type: ignore[no-untyped-def]
    """Every output (frames and each cache too) at the min and max of the profile, neither the traced shape."""
    model, specs = wan_loaded
    spec = specs[component]
    session = _session(wan_paths.onnx(component, kind))
    assert [i.name for i in session.get_inputs()] == [t.name for t in spec.inputs]
    assert [o.name for o in session.get_outputs()] == [t.name for t in spec.outputs]
    traced = export_shapes(spec, "dynamo")
    for seed, which in enumerate(("min", "max"), start=11):
        feeds = sample_inputs(spec, which, seed=seed)
        assert any(feeds[n].shape != traced[n] for n in feeds) or spec.dynamic_axes() == {}, "not a fresh shape"
        expected = _run_torch(model.modules[component], spec, feeds)
        actual = session.run(None, feeds)
        assert len(actual) == len(expected) == len(spec.outputs)
        for name, a, e in zip((t.name for t in spec.outputs), actual, expected):
            assert a.shape == e.shape, (component, name)
            assert _max_rel(a, e) < MAX_REL, (component, kind, which, name, _max_rel(a, e))


def test_cpu_target_graphs_match_the_patched_graphs(wan_loaded, wan_paths: ArtifactPaths) -> None:  # type: ignore[no-untyped-def]
    """The cpu target's ONNX Runtime fusions (attention) keep each graph's outputs."""
    _, specs = wan_loaded
    manifest = json.loads((wan_paths.engines_dir("cpu") / "manifest.json").read_text())
    assert set(manifest["components"]) == set(GRAPHS)
    for component in GRAPHS:
        feeds = sample_inputs(specs[component], "max", seed=5)
        file = manifest["components"][component]["variants"]["fp32"]["file"]
        fused = _session(wan_paths.engines_dir("cpu") / file).run(None, feeds)
        patched = _session(wan_paths.onnx(component, "opt")).run(None, feeds)
        for a, e in zip(fused, patched):
            assert _max_rel(a, e) < MAX_REL, component


def _stream_decode(first: ort.InferenceSession, following: ort.InferenceSession, latents: np.ndarray) -> np.ndarray:
    """The runtime's streaming loop: the first graph on latent frame 0, the next graph per later frame, caches fed back."""
    outputs = first.run(None, {"latent": latents[:, :, :1]})
    frames, caches = [outputs[0]], outputs[1:]
    names = [i.name for i in following.get_inputs()][1:]
    for index in range(1, latents.shape[2]):
        outputs = following.run(None, {"latent": latents[:, :, index : index + 1], **dict(zip(names, caches))})
        frames.append(outputs[0])
        caches = outputs[1:]
    return np.concatenate(frames, axis=2)


def test_streaming_decode_matches_diffusers_decode(wan_paths: ArtifactPaths) -> None:
    """The two VAE graphs chained over 3 latent frames give AutoencoderKLWan.decode's 9 frames."""
    vae = wan.load_torch(wan_paths.model_dir)["vae"]
    rng = np.random.default_rng(3)
    latents = rng.standard_normal((1, vae.config.z_dim, 3, 2, 4)).astype(np.float32)
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
    with torch.inference_mode():
        expected = vae.decode(torch.from_numpy(latents) * std + mean, return_dict=False)[0].numpy()
    streamed = _stream_decode(_session(wan_paths.onnx("vae_decoder", "opt")), _session(wan_paths.onnx("vae_decoder_next", "opt")), latents)
    assert streamed.shape == expected.shape == (1, 3, 1 + 4 * 2, 2 * 16, 4 * 16)
    assert _max_rel(streamed, expected) < MAX_REL


def test_text_encoder_zeroes_padded_positions(wan_loaded, wan_paths: ArtifactPaths) -> None:  # type: ignore[no-untyped-def]
    """Pad ids (0) are masked in attention and their rows are zero, as WanPipeline trims and zero-pads them."""
    from transformers import T5TokenizerFast

    model, specs = wan_loaded
    tokenizer = T5TokenizerFast.from_pretrained(wan_paths.model_dir / "tokenizer")
    ids = tokenizer(["a red circle", "a blue square moving left"], padding="max_length", max_length=model.tokenizer_max_length, return_tensors="np")
    hidden = _session(wan_paths.onnx("text_encoder", "opt")).run(None, {"input_ids": ids.input_ids.astype(np.int32)})[0]
    mask = ids.attention_mask.astype(bool)
    assert not mask.all() and np.all(hidden[~mask] == 0) and np.all(np.abs(hidden[mask]).sum(-1) > 0)
    with torch.inference_mode():
        masked = (
            model.modules["text_encoder"]
            .model(torch.from_numpy(ids.input_ids), attention_mask=torch.from_numpy(ids.attention_mask))
            .last_hidden_state
        )
    assert _max_rel(hidden[mask], masked.numpy()[mask]) < MAX_REL


def test_wan_tiny_layout_is_detected_and_checked(wan_paths: ArtifactPaths, tmp_path: Path) -> None:
    """detect_family picks wan for a WanPipeline folder; check_layout names a missing part or a wrong class."""
    assert detect_family(wan_paths.model_dir).NAME == "wan"
    assert not get_family("unet3d").detect(wan_paths.model_dir)
    wan.check_layout(wan_paths.model_dir)
    broken = tmp_path / "model"
    broken.mkdir()
    for part in ("transformer", "vae", "text_encoder", "tokenizer"):
        (broken / part).symlink_to(wan_paths.model_dir / part)
    with pytest.raises(T2VError, match="no scheduler/ folder") as raised:
        wan.check_layout(broken)
    assert "\n" not in str(raised.value)
    (broken / "scheduler").mkdir()
    (broken / "scheduler" / "scheduler_config.json").write_text(json.dumps({"_class_name": "DDIMScheduler"}))
    with pytest.raises(T2VError, match="'DDIMScheduler', not UniPCMultistepScheduler"):
        wan.check_layout(broken)


def test_t5_tokenizer_is_deterministic_with_pad_zero_and_eos() -> None:
    """The built Unigram tokenizer: <pad>=0, </s> appended, the same vocab every time."""
    first, second = wan.t5_unigram(), wan.t5_unigram()
    assert first.to_str() == second.to_str()
    assert first.token_to_id("<pad>") == 0 and first.token_to_id("</s>") == 1
    ids = first.encode("a red circle moving left").ids
    assert ids[-1] == 1 and 0 not in ids and first.token_to_id("<unk>") not in ids


def test_wan_specs_need_only_export_config() -> None:
    """component_specs reads export.json's config alone: latent frames from pixel frames, caches scaled with the latent."""
    config = {
        "text_dim": 4096,
        "vocab_size": 256384,
        "seq_len": 512,
        "latent_channels": 48,
        "out_channels": 48,
        "patch_size": [1, 2, 2],
        "spatial_factor": 16,
        "temporal_factor": 4,
        "vae_out_channels": 3,
        "num_train_timesteps": 1000,
        "vae_caches": [[48, 1], [1024, 1], [1024, 2], [256, 8]],
    }
    ranges = ShapeRanges(batch=(1, 1, 1), frames=(1, 81, 121), height=(480, 704, 704), width=(832, 1280, 1280))
    specs = wan.component_specs(config, ranges)
    assert list(specs) == list(wan.COMPONENTS)
    den = specs["denoiser"]
    assert den.axes["frames"] == (1, 21, 31) and den.axes["latent_height"] == (30, 44, 44)
    assert [t.role for t in den.inputs] == ["latent", "timestep", "context"] and den.outputs[0].role == "prediction"
    nxt = specs["vae_decoder_next"]
    caches = [t for t in nxt.inputs if t.role and t.role.startswith("cache:")]
    assert [t.role for t in caches] == [f"cache:{k}" for k in range(len(config["vae_caches"]))]
    assert [t.role for t in nxt.outputs[1:]] == [t.role for t in caches]
    assert nxt.input_shapes("max")["cache_in_3"] == (1, 256, wan.CACHE_T, 44 * 8, 80 * 8)
    assert nxt.outputs[0].shape[2] == config["temporal_factor"] and specs["vae_decoder"].outputs[0].shape[2] == 1


def test_dit_layer_groups_are_blocks_by_kind(wan_paths: ArtifactPaths) -> None:
    """calibration's groups on the exported DiT: every block has self-attention, cross-attention and FFN groups;
    the patch embedding, condition embedders and output projection fall under the family's FP16 defaults."""
    import onnx

    from t2vtrt.calibration.groups import layer_groups

    graph = onnx.load(str(wan_paths.onnx("denoiser", "opt")), load_external_data=False).graph
    quantizable = {n.name: n.op_type for n in graph.node if n.op_type in ("MatMul", "Gemm", "Conv")}
    groups = {g.name: g for g in layer_groups(quantizable, get_family("wan"))}
    layers = json.loads((wan_paths.model_dir / "transformer" / "config.json").read_text())["num_layers"]
    expected = {f"blocks.{i}/{kind}" for i in range(layers) for kind in ("self_attention", "cross_attention", "ffn")}
    defaults = {f"default:{p}" for p in wan.SENSITIVE_LAYERS if p.startswith("/")}
    assert set(groups) == expected | defaults, sorted(set(groups) ^ (expected | defaults))
    assert all(n.startswith(f"/model/{name.split('/')[0]}/") for name in expected for n in groups[name].nodes)


def test_gpu_plan_covers_the_four_graphs_and_their_caches(wan_paths: ArtifactPaths) -> None:
    """The TensorRT build plan (no GPU needed) has a profile per graph input, caches included, from the family's ranges."""
    from t2vtrt.build.engines.plan import make_plan
    from t2vtrt.build.gpus.profiles import load_profile

    profile = load_profile("rtx3060")
    plan = make_plan(wan_paths, profile).to_json()
    assert set(plan["components"]) == set(GRAPHS)
    nxt = json.loads(wan_paths.export_info.read_text())["components"]["vae_decoder_next"]
    assert set(plan["components"]["vae_decoder_next"]["profile"]) == {t["name"] for t in nxt["inputs"]}
    # The profile's wan ranges (its table, else the family's gpu_ranges for its VRAM) within the model's.
    gpu = profile.ranges_for("wan")
    model = json.loads(wan_paths.export_info.read_text())["ranges"]
    assert gpu is not None and plan["ranges"]["batch"][2] == min(gpu.batch[2], model["batch"][2])


def test_weights_that_do_not_fit_the_config_are_one_line(wan_paths: ArtifactPaths, tmp_path: Path) -> None:
    """A transformer folder missing a weight names it, in one line, instead of loading random values."""
    import shutil

    from diffusers import WanTransformer3DModel
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "transformer"
    shutil.copytree(wan_paths.model_dir / "transformer", folder)
    shard = next(folder.glob("*.safetensors"))
    state = load_file(str(shard))
    dropped = sorted(state)[0]
    save_file({k: v for k, v in state.items() if k != dropped}, str(shard))
    with pytest.raises(T2VError, match=f"lacks {dropped}") as raised:
        wan._diffusers_fp32(WanTransformer3DModel, folder)
    assert "\n" not in str(raised.value)


def test_gpu_low_precision_graphs_cover_every_graph(wan_paths: ArtifactPaths, tmp_path: Path) -> None:
    """A GPU target's FP16/BF16 step converts and gates all four graphs: UMT5 in BF16 only, the next-chunk VAE graph
    gated by the vae_decoder stage's thresholds."""
    import shutil

    from t2vtrt.build.precision import stage_of, write_low_precision

    paths = ArtifactPaths(tmp_path / wan_paths.root.name)
    shutil.copytree(wan_paths.onnx_dir, paths.onnx_dir)  # the session's artifacts stay FP32-only
    info = json.loads(paths.export_info.read_text())
    assert stage_of(info, "vae_decoder_next") == "vae_decoder" and stage_of(info, "denoiser") == "denoiser"
    records = write_low_precision(paths, ("fp16", "bf16"))
    assert set(records) == set(GRAPHS)
    assert records["text_encoder"]["precision"] == "bf16"
    assert records["vae_decoder_next"]["settings"]["thresholds"] == records["vae_decoder"]["settings"]["thresholds"]
