"""Manifest schema v2: each new field is checked (schema or role contract), and version 1 manifests still load."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import streaming_target as st

from t2vtrt.build.engines.manifest import build_manifest
from t2vtrt.runtime.errors import T2VError
from t2vtrt.runtime.manifest import SCHEMA_VERSION, load_manifest, upgrade_v1, validate_manifest
from t2vtrt.runtime.pipeline import Pipeline


@pytest.fixture(scope="module")
def stream_manifest(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The synthetic Wan-shaped target's manifest (streaming decoder pair, flow scheduler)."""
    return st.manifest_json(st.build_target(tmp_path_factory.mktemp("v2") / "cpu"))


@pytest.fixture(scope="module")
def unet3d_manifest(tiny_engines: Path) -> dict[str, Any]:
    """The tiny unet3d target's manifest, as the engines stage writes it now."""
    return json.loads((tiny_engines / "manifest.json").read_text())


def test_the_writer_writes_version_2_with_a_role_on_every_tensor(unet3d_manifest: dict[str, Any], stream_manifest: dict[str, Any]) -> None:
    """schema_version 2, denoisers, a role per tensor (unet3d's from its family specs), the stream description."""
    assert unet3d_manifest["schema_version"] == stream_manifest["schema_version"] == SCHEMA_VERSION == 2
    assert unet3d_manifest["denoisers"] == [{"component": "denoiser", "until_timestep": None}]
    roles = {c: [t["role"] for t in e["inputs"] + e["outputs"]] for c, e in unet3d_manifest["components"].items()}
    assert roles == {
        "text_encoder": ["token_ids", "context"],
        "denoiser": ["latent", "timestep", "context", "prediction"],
        "vae_decoder": ["latent", "frames"],
    }
    assert stream_manifest["latent"]["vae_decode"] == "streaming"
    assert stream_manifest["latent"]["stream"] == {"first": "vae_decoder", "next": "vae_decoder_next", "latent_frames_per_call": 1}
    assert "stream" not in unet3d_manifest["latent"]


def test_an_export_from_before_roles_gets_unet3d_roles_by_name(unet3d_manifest: dict[str, Any]) -> None:
    """build_manifest over an export.json without roles (an artifact built before v2) maps unet3d names; an unknown name is refused."""
    info = {key: unet3d_manifest[key] for key in ("model", "scheduler", "latent", "defaults", "ranges")}
    info["tokenizer"] = unet3d_manifest["tokenizer"]
    info["components"] = {n: {k: c[k] for k in ("inputs", "outputs", "axes")} for n, c in copy.deepcopy(unet3d_manifest["components"]).items()}
    variants = {n: c["variants"] for n, c in unet3d_manifest["components"].items()}
    for component in info["components"].values():
        for tensor in component["inputs"] + component["outputs"]:
            del tensor["role"]
    data = build_manifest(info, unet3d_manifest["target"], variants, "tokenizer.json", unet3d_manifest["tokenizer"]["sha256"])
    validate_manifest(data)
    assert data["components"]["denoiser"]["inputs"][0]["role"] == "latent"
    info["components"]["denoiser"]["inputs"][0]["name"] = "hidden_states"
    with pytest.raises(T2VError, match=r"export.json's denoiser input 'hidden_states' has no role .*run `t2vtrt export` again"):
        build_manifest(info, unet3d_manifest["target"], variants, "tokenizer.json", unet3d_manifest["tokenizer"]["sha256"])


def _as_v1(data: dict[str, Any], version: int | None) -> dict[str, Any]:
    """A v2 unet3d manifest as version 1 wrote it: no roles, no denoisers, schema_version 1 (or none)."""
    old = copy.deepcopy(data)
    old.pop("denoisers")
    for component in old["components"].values():
        for tensor in component["inputs"] + component["outputs"]:
            tensor.pop("role")
    if version is None:
        old.pop("schema_version")
    else:
        old["schema_version"] = version
    return old


@pytest.mark.parametrize("version", [1, None])
def test_a_version_1_manifest_loads_and_generates_the_same_video(engines_copy: Path, tiny_engines: Path, version: int | None) -> None:
    """v1 (schema_version 1 or none, no roles) is read by mapping unet3d's tensor names: same roles, same video."""
    current = json.loads((tiny_engines / "manifest.json").read_text())
    (engines_copy / "manifest.json").write_text(json.dumps(_as_v1(current, version)))
    manifest = load_manifest(engines_copy)
    assert manifest.data["schema_version"] == 2 and manifest.denoisers == [("denoiser", None)]
    assert manifest.data["components"] == current["components"]
    args = dict(steps=2, frames=2, height=32, width=32, seed=5)
    assert np.array_equal(Pipeline(manifest)("a red balloon", **args), Pipeline.from_dir(tiny_engines)("a red balloon", **args))


def test_a_version_1_manifest_with_an_unknown_tensor_is_a_rebuild_line(engines_copy: Path, tiny_engines: Path) -> None:
    """A v1 tensor name outside unet3d's cannot be given a role: one line, naming it and `t2vtrt engines`."""
    old = _as_v1(json.loads((tiny_engines / "manifest.json").read_text()), 1)
    old["components"]["denoiser"]["inputs"][0]["name"] = "hidden_states"
    (engines_copy / "manifest.json").write_text(json.dumps(old))
    with pytest.raises(
        T2VError, match=r"version 1 manifest whose denoiser tensor 'hidden_states' has no known role; rebuild it with `t2vtrt engines`"
    ):
        load_manifest(engines_copy)


def test_a_newer_manifest_names_the_versions_this_runtime_reads(engines_copy: Path) -> None:
    """schema_version 3 is refused in one line: upgrade t2v-trt or rebuild."""
    data = json.loads((engines_copy / "manifest.json").read_text())
    (engines_copy / "manifest.json").write_text(json.dumps({**data, "schema_version": 3}))
    with pytest.raises(T2VError, match=r"schema version 3; this runtime reads versions 1-2: upgrade t2v-trt or rebuild"):
        load_manifest(engines_copy)


def test_upgrade_v1_leaves_its_input_alone(unet3d_manifest: dict[str, Any]) -> None:
    """The v1 mapping works on a copy (callers may keep the raw data)."""
    old = _as_v1(unet3d_manifest, 1)
    before = copy.deepcopy(old)
    upgrade_v1(old)
    assert old == before


Edit = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Edit:
    """An edit that sets a /-separated path (list indices as numbers)."""

    def edit(data: dict[str, Any]) -> None:
        keys: list[Any] = [int(k) if k.isdigit() else k for k in path.split("/")]
        node = data
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value

    return edit


def _drop(path: str) -> Edit:
    """An edit that deletes a /-separated path."""

    def edit(data: dict[str, Any]) -> None:
        keys: list[Any] = [int(k) if k.isdigit() else k for k in path.split("/")]
        node = data
        for key in keys[:-1]:
            node = node[key]
        del node[keys[-1]]

    return edit


STREAM_CASES: list[tuple[str, Edit, str]] = [
    ("role is required", _drop("components/denoiser/inputs/0/role"), r"components/denoiser/inputs/0: 'role' is a required property"),
    ("role is a known one", _set("components/denoiser/inputs/0/role", "noise"), r"components/denoiser/inputs/0/role: 'noise' does not match"),
    ("cache role needs a key", _set("components/vae_decoder/outputs/1/role", "cache:"), r"components/vae_decoder/outputs/1/role"),
    ("vae_decode is an enum", _set("latent/vae_decode", "chunked"), r"latent/vae_decode: 'chunked' is not one of"),
    ("streaming needs stream", _drop("latent/stream"), r"at latent: 'stream' is a required property"),
    ("stream only with streaming", _set("latent/vae_decode", "video"), r"at latent: False schema does not allow \{'first'"),
    ("stream.first is required", _drop("latent/stream/first"), r"latent/stream: 'first' is a required property"),
    (
        "latent_frames_per_call >= 1",
        _set("latent/stream/latent_frames_per_call", 0),
        r"latent/stream/latent_frames_per_call: 0 is less than the minimum",
    ),
    ("stream names components", _set("latent/stream/next", "vae_decoder_later"), r"latent.stream.next names component 'vae_decoder_later'"),
    ("denoisers is required", _drop("denoisers"), r"at \(top level\): 'denoisers' is a required property"),
    ("denoisers is not empty", _set("denoisers", []), r"at denoisers: \[\] should be non-empty"),
    ("until_timestep is required", _drop("denoisers/0/until_timestep"), r"denoisers/0: 'until_timestep' is a required property"),
    ("denoisers name components", _set("denoisers/0/component", "expert"), r"denoisers\[0\] names component 'expert'"),
    ("the last denoiser is open-ended", _set("denoisers/0/until_timestep", 500), r"denoisers\[0\].until_timestep must be null"),
    (
        "a denoiser needs a timestep",
        _set("components/denoiser/inputs/1/role", "token_mask"),
        r"denoiser needs exactly one input with role 'timestep'",
    ),
    (
        "a text encoder needs token ids",
        _set("components/text_encoder/inputs/0/role", "latent"),
        r"text_encoder needs exactly one input with role 'token_ids'",
    ),
    (
        "caches line up",
        _set("components/vae_decoder_next/inputs/2/role", "cache:2"),
        r"caches do not line up: vae_decoder outputs \['cache:0', 'cache:1'\]",
    ),
    (
        "the next graph takes the caches",
        _set("components/vae_decoder_next/inputs/1/role", "context"),
        r"vae_decoder_next has inputs with roles the runtime cannot feed",
    ),
]


@pytest.mark.parametrize(("edit", "message"), [(e, m) for _, e, m in STREAM_CASES], ids=[c[0] for c in STREAM_CASES])
def test_each_new_field_is_checked_in_one_line(stream_manifest: dict[str, Any], edit: Edit, message: str) -> None:
    """A broken v2 field is one line naming where, ending in the rebuild command."""
    data = copy.deepcopy(stream_manifest)
    validate_manifest(data)  # the unedited manifest is valid
    edit(data)
    with pytest.raises(T2VError, match=message) as info:
        validate_manifest(data)
    assert "\n" not in str(info.value) and str(info.value).endswith("`t2vtrt engines`")


def test_two_denoisers_need_decreasing_boundaries(stream_manifest: dict[str, Any]) -> None:
    """Experts are listed from high noise to low: each until_timestep below the one before."""
    data = copy.deepcopy(stream_manifest)
    data["components"]["expert"] = data["components"]["expert2"] = data["components"]["denoiser"]
    data["denoisers"] = [
        {"component": "expert", "until_timestep": 900},
        {"component": "expert2", "until_timestep": 500},
        {"component": "denoiser", "until_timestep": None},
    ]
    validate_manifest(data)
    data["denoisers"][1]["until_timestep"] = 950
    with pytest.raises(T2VError, match="denoisers' until_timestep must decrease"):
        validate_manifest(data)


def test_token_mask_is_fed_when_the_text_encoder_takes_one(tmp_path: Path) -> None:
    """An optional token_mask input gets the tokenizer's attention mask (1 for tokens, 0 for padding) in its dtype."""
    target = st.build_target(tmp_path / "cpu")
    data = st.manifest_json(target)
    data["components"]["text_encoder"]["inputs"].append(
        {"name": "attention_mask", "dtype": "int64", "shape": ["batch", st.SEQ], "role": "token_mask"}
    )
    validate_manifest(data)
    pipe = Pipeline(load_manifest(target))
    pipe.manifest.data["components"]["text_encoder"]["inputs"] = data["components"]["text_encoder"]["inputs"]
    seen: dict[str, np.ndarray] = {}

    class Fake:
        """Stands in for the text encoder: records its feeds."""

        def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            seen.update(feeds)
            return {"last_hidden_state": np.zeros((2, st.SEQ, st.HIDDEN), dtype=np.float32)}

    pipe.sessions["text_encoder"] = Fake()  # type: ignore[assignment]
    pipe.encode(["a red circle"], [""], guided=True)
    assert seen["input_ids"].dtype == np.int64 and seen["attention_mask"].dtype == np.int64
    assert seen["attention_mask"].tolist() == [[0] * st.SEQ, [1, 1, 1] + [0] * (st.SEQ - 3)]
