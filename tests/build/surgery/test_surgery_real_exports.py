"""Integration: the default pipeline on real (tiny, random-weight) UNet3D and VAE-decoder exports."""

import warnings

import numpy as np
import onnx
import pytest

from t2vtrt.build.surgery import DEFAULT_PIPELINE, run_surgery

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

# Export (~5 s) + surgery (~2 s) + ONNX Runtime; the timeout guards against a pass that stops converging.
pytestmark = pytest.mark.timeout(120)


class _UNet(torch.nn.Module):
    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, encoder_hidden_states):
        return self.unet(sample, timestep, encoder_hidden_states, return_dict=False)[0]


class _Decoder(torch.nn.Module):
    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, latent):
        return self.vae.decode(latent / 0.18215).sample


def _export(module, args, path, names, dynamic_axes) -> None:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, args, str(path), dynamo=False, opset_version=17, input_names=names[:-1], output_names=names[-1:], dynamic_axes=dynamic_axes
        )


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """The tiny UNet3D denoiser and VAE decoder, exported with the legacy exporter and dynamic axes."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("exports")
    unet = diffusers.UNet3DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
        up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
        block_out_channels=(32, 64),
        layers_per_block=1,
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=32,
    ).eval()
    video = {0: "batch", 2: "frames", 3: "height", 4: "width"}
    _export(
        _UNet(unet),
        (torch.randn(2, 4, 2, 8, 8), torch.tensor([10.0, 10.0]), torch.randn(2, 77, 32)),
        folder / "denoiser.onnx",
        ["sample", "timestep", "encoder_hidden_states", "noise_pred"],
        {"sample": video, "timestep": {0: "batch"}, "encoder_hidden_states": {0: "batch"}, "noise_pred": video},
    )
    vae = diffusers.AutoencoderKL(
        block_out_channels=(16, 16, 32, 32),
        down_block_types=4 * ("DownEncoderBlock2D",),
        up_block_types=4 * ("UpDecoderBlock2D",),
        latent_channels=4,
        norm_num_groups=8,
        layers_per_block=1,
    ).eval()
    image = {0: "batch", 2: "height", 3: "width"}
    _export(_Decoder(vae), (torch.randn(1, 4, 8, 8),), folder / "vae_decoder.onnx", ["latent", "images"], {"latent": image, "images": image})
    return folder


def _run(path, feeds) -> np.ndarray:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


RNG = np.random.default_rng(0)
CASES = {
    # Shapes differ from the export's sample inputs: the dynamic axes must survive the surgery.
    "denoiser": {
        "sample": RNG.standard_normal((1, 4, 3, 16, 16), np.float32),
        "timestep": np.array([500.0], np.float32),
        "encoder_hidden_states": RNG.standard_normal((1, 77, 32), np.float32),
    },
    "vae_decoder": {"latent": RNG.standard_normal((2, 4, 8, 16), np.float32)},
}


@pytest.mark.parametrize("component", sorted(CASES))
def test_default_pipeline_keeps_outputs_and_shrinks_graph(exports, component):
    src, dst = exports / f"{component}.onnx", exports / f"{component}.opt.onnx"
    report = run_surgery(src, dst)
    assert {"nodes_before", "nodes_after", "ops_before", "ops_after", "passes"} <= set(report)
    assert [p["name"] for p in report["passes"]] == DEFAULT_PIPELINE
    assert report["nodes_after"] < report["nodes_before"] * 0.7
    ops_after = report["ops_after"]
    assert "Identity" not in ops_after and "Constant" not in ops_after and "OneHot" not in ops_after
    assert ops_after.get("Cast", 0) == 0  # every Cast in these exports is a same-type no-op after folding
    assert report["ops_after"]["InstanceNormalization"] == report["ops_before"]["InstanceNormalization"]
    before, after = _run(src, CASES[component]), _run(dst, CASES[component])
    assert before.shape == after.shape
    assert float(np.abs(before - after).max()) < 1e-5
    assert [i.name for i in onnx.load(str(dst)).graph.input] == list(CASES[component])


def _same_model(a, b) -> None:
    """Same nodes, same I/O and bit-identical initializers (wherever their bytes were stored)."""
    ma, mb = onnx.load(str(a)), onnx.load(str(b))
    assert [(n.op_type, list(n.input), list(n.output)) for n in ma.graph.node] == [(n.op_type, list(n.input), list(n.output)) for n in mb.graph.node]
    inits_a = {t.name: onnx.numpy_helper.to_array(t) for t in ma.graph.initializer}
    inits_b = {t.name: onnx.numpy_helper.to_array(t) for t in mb.graph.initializer}
    assert sorted(inits_a) == sorted(inits_b)
    for name, values in inits_a.items():
        assert values.dtype == inits_b[name].dtype
        np.testing.assert_array_equal(values, inits_b[name])


def test_weights_left_on_disk_give_the_same_graph(exports, tmp_path, monkeypatch):
    """The denoiser pipeline on an exporter-style graph (one file per weight, none read in) writes the very graph
    it writes from memory, with one <graph>.onnx.data."""
    from t2vtrt.build import graphfiles
    from t2vtrt.build.surgery import PIPELINES

    passes = PIPELINES["denoiser"]
    in_memory = tmp_path / "mem" / "denoiser.opt.onnx"
    run_surgery(exports / "denoiser.onnx", in_memory, passes)
    split = tmp_path / "split" / "denoiser.onnx"
    split.parent.mkdir()
    onnx.save(onnx.load(str(exports / "denoiser.onnx")), str(split), save_as_external_data=True, all_tensors_to_one_file=False, size_threshold=0)
    monkeypatch.setattr(graphfiles, "INLINE_BYTES", 256)  # every weight stays on disk; scalars and shapes are read
    monkeypatch.setattr(graphfiles, "EXTERNAL_DATA_BYTES", 0)
    on_disk = tmp_path / "disk" / "denoiser.opt.onnx"
    report = run_surgery(split, on_disk, passes)
    assert {p["name"]: p["changed"] for p in report["passes"]}["fold_scale_into_weights"] > 0
    assert {p["name"]: p["changed"] for p in report["passes"]}["split_geglu"] > 0
    assert sorted(p.name for p in on_disk.parent.iterdir()) == ["denoiser.opt.onnx", "denoiser.opt.onnx.data"]
    _same_model(in_memory, on_disk)
