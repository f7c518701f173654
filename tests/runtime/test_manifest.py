"""The manifest contract: schema validation, variant choice and hash checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from t2vtrt.runtime.errors import T2VError
from t2vtrt.runtime.manifest import load_manifest, validate_manifest


def test_built_manifest_is_valid_and_names_every_file(tiny_engines: Path) -> None:
    """The cpu target's manifest validates, and each component has an fp32 ONNX Runtime variant."""
    manifest = load_manifest(tiny_engines)
    assert manifest.backend == "onnxruntime"
    for name in ("text_encoder", "denoiser", "vae_decoder"):
        variant = manifest.variant(name, "fp32")
        assert variant["backend"] == "onnxruntime" and manifest.path(variant["file"]).is_file()
    assert manifest.data["tools"]["onnxruntime"]
    assert manifest.data["model"]["family"] == "unet3d"


def test_precision_falls_back_per_component(tiny_engines: Path) -> None:
    """A precision only some graphs have (int8 denoiser) leaves the others at float; an unbuilt one fails."""
    manifest = load_manifest(tiny_engines)
    denoiser = manifest.component("denoiser")["variants"]
    manifest.data["components"]["denoiser"]["variants"] = {**denoiser, "int8": {**denoiser["fp32"], "precision": "int8"}}
    assert manifest.variant("denoiser", "int8")["precision"] == "int8"
    assert manifest.variant("text_encoder", "int8")["precision"] == "fp32"
    with pytest.raises(T2VError, match="precision 'fp8' was not built"):
        manifest.variant("denoiser", "fp8")


@pytest.mark.parametrize(
    ("path", "value", "where"),
    [
        (("target", "backend"), "directml", "target/backend"),
        (("schema_version",), 3, "schema_version"),
        (("components", "denoiser", "axes", "frames"), [1, 8], "components/denoiser/axes/frames"),
        (("tokenizer", "sha256"), "abc", "tokenizer/sha256"),
    ],
)
def test_schema_violations_are_named(tiny_engines: Path, path: tuple[str, ...], value: object, where: str) -> None:
    """Each violation is one line naming the JSON path."""
    data = json.loads((tiny_engines / "manifest.json").read_text())
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(T2VError, match=where):
        validate_manifest(data)


def test_missing_file_is_named(engines_copy: Path) -> None:
    """A deleted graph is reported by name."""
    (engines_copy / "text_encoder.fp32.onnx").unlink()
    with pytest.raises(T2VError, match="text_encoder.fp32.onnx is named in the manifest but missing"):
        load_manifest(engines_copy)


def test_hashes_can_be_skipped_for_trusted_dirs(engines_copy: Path) -> None:
    """verify_hashes=False loads a modified target (a service that verified once at deploy time)."""
    graph = engines_copy / "vae_decoder.fp32.onnx"
    graph.write_bytes(graph.read_bytes() + b"\0")
    with pytest.raises(T2VError):
        load_manifest(engines_copy)
    assert load_manifest(engines_copy, verify_hashes=False).root == engines_copy
