"""Each exported graph reproduces its PyTorch module (raw export and after surgery)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from t2vtrt.build.artifacts import ArtifactPaths
from t2vtrt.build.export import sample_inputs
from t2vtrt.build.families import get_family
from t2vtrt.build.models import EMBEDDED


def _rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    """||a - b|| / ||b||."""
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# Two points of each profile: the opt point and an off-opt one (other batch, frames and size).
SHAPES = {
    "text_encoder": [None, {"input_ids": (1, 77)}],
    "denoiser": [None, {"sample": (1, 4, 3, 4, 6), "timestep": (1,), "encoder_hidden_states": (1, 77, 32)}],
    "vae_decoder": [None, {"latent": (3, 4, 4, 6)}],
}


@pytest.fixture(scope="module")
def loaded(tiny_paths: ArtifactPaths, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """The tiny model's torch modules, loaded through the family loader."""
    family = get_family("unet3d")
    model = family.load(tiny_paths.model_dir, tmp_path_factory.mktemp("work"))
    return model, family.component_specs(model.config, EMBEDDED["tiny"].ranges)


@pytest.mark.parametrize("kind", ["", "opt"])
@pytest.mark.parametrize("component", ["text_encoder", "denoiser", "vae_decoder"])
def test_onnx_matches_torch(loaded, tiny_paths: ArtifactPaths, component: str, kind: str) -> None:  # type: ignore[no-untyped-def]
    """Relative L2 < 1e-5 against the PyTorch module on fresh random inputs at two shapes."""
    model, specs = loaded
    spec = specs[component]
    session = ort.InferenceSession(str(tiny_paths.onnx(component, kind)), providers=["CPUExecutionProvider"])
    for seed, shapes in enumerate(SHAPES[component], start=101):
        feeds = sample_inputs(spec, seed=seed, shapes=shapes)
        with torch.inference_mode():
            expected = model.modules[component](*(torch.from_numpy(feeds[t.name]) for t in spec.inputs)).numpy()
        actual = session.run(None, feeds)[0]
        assert actual.shape == expected.shape
        assert _rel_l2(actual, expected) < 1e-5, (component, kind, shapes)


def test_export_info_records_the_contract(tiny_paths: ArtifactPaths) -> None:
    """export.json carries what later stages need without torch: specs, tokenizer, scheduler, model hash."""
    import json

    info = json.loads(tiny_paths.export_info.read_text())
    assert set(info["components"]) == {"text_encoder", "denoiser", "vae_decoder"}
    assert info["scheduler"]["config"]["beta_schedule"] == "scaled_linear"
    assert info["scheduler"]["config"]["clip_sample"] is False
    assert info["scheduler"]["config"]["set_alpha_to_one"] is False
    assert len(info["model"]["hash"]) == 64
    assert info["latent"]["spatial_factor"] == 8
    denoiser = info["components"]["denoiser"]
    assert [t["name"] for t in denoiser["inputs"]] == ["sample", "timestep", "encoder_hidden_states"]
    assert denoiser["axes"]["batch"] == [1, 2, 4]  # classifier-free guidance doubles the prompt batch


def test_export_info_lets_a_gpu_profile_replan_shapes(tiny_paths: ArtifactPaths) -> None:
    """With the family config in export.json, other shape ranges give specs with those ranges (no torch)."""
    import json

    from t2vtrt.build.engines.plan import component_specs_for
    from t2vtrt.build.families.spec import ShapeRanges

    info = json.loads(tiny_paths.export_info.read_text())
    assert info["config"]["latent_channels"] == 4
    narrower = ShapeRanges(batch=(1, 1, 1), frames=(8, 8, 8), height=(64, 64, 64), width=(64, 64, 64))
    specs = component_specs_for(info, narrower)
    assert specs is not None and specs["denoiser"]["axes"]["batch"] == [1, 2, 2]  # 1: guidance off
    assert specs["denoiser"]["axes"]["frames"] == [8, 8, 8]


def test_embedded_model_is_deterministic(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Making `tiny` twice gives byte-identical weights (the model hash is stable)."""
    from t2vtrt.build.models import model_hash, resolve_model

    first = resolve_model("tiny", tmp_path / "a")
    second = resolve_model("tiny", tmp_path / "b")
    assert model_hash(first.model_dir) == model_hash(second.model_dir)


def test_a_graph_past_the_limit_gets_one_data_file(loaded, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Past 2 GB the exporter writes one file per weight (hundreds, named after tensors); the stage joins them
    into <graph>.onnx.data. torch only does that for a real > 2 GB module, so here its output is split the same way."""
    import onnx

    from t2vtrt.build import export

    real_export = torch.onnx.export

    def exporter_past_2gb(*args, **kwargs):  # type: ignore[no-untyped-def]
        real_export(*args, **kwargs)
        assert kwargs["external_data"]
        path = args[2]
        onnx.save(onnx.load(path), path, save_as_external_data=True, all_tensors_to_one_file=False, size_threshold=1024)

    model, specs = loaded
    monkeypatch.setattr(export, "TWO_GB", 64 << 20)  # every module counts as past the limit
    monkeypatch.setattr(torch.onnx, "export", exporter_past_2gb)
    out = export.export_component(model.modules["vae_decoder"], specs["vae_decoder"], tmp_path / "g" / "vae_decoder.onnx")
    assert sorted(p.name for p in out.parent.iterdir()) == ["vae_decoder.onnx", "vae_decoder.onnx.data"]
    feeds = sample_inputs(specs["vae_decoder"], seed=7)
    with torch.inference_mode():
        expected = model.modules["vae_decoder"](torch.from_numpy(feeds["latent"])).numpy()
    actual = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    assert _rel_l2(actual, expected) < 1e-5


def test_export_all_writes_smallest_first_and_lets_each_module_go(tiny_paths: ArtifactPaths, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Components are exported in order of weight bytes, and each leaves `modules` once written (its weights can be freed)."""
    from t2vtrt.build.export import _param_bytes, export_all

    family = get_family("unet3d")
    (tmp_path / "work").mkdir()
    model = family.load(tiny_paths.model_dir, tmp_path / "work")
    specs = family.component_specs(model.config, EMBEDDED["tiny"].ranges)
    sizes = {name: _param_bytes(module) for name, module in model.modules.items()}
    order: list[str] = []
    paths = export_all(model.modules, specs, tmp_path / "onnx", "torchscript", family.OPSET, on_done=lambda name, _: order.append(name))
    assert order == sorted(sizes, key=sizes.get) and set(paths) == set(specs)
    assert model.modules == {} and all(p.is_file() for p in paths.values())
