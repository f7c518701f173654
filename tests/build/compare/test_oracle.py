"""compare's end-to-end oracle (the family's diffusers pipeline) when it cannot run or has no threshold, and stage-wide tolerances."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import numpy as np

from t2vtrt.build.artifacts import ArtifactPaths
from t2vtrt.build.compare.capture import EvalSet, ReferenceCapture, Settings
from t2vtrt.build.compare.gates import FAILED, PASSED, SKIPPED
from t2vtrt.build.compare.oracle import KIND, gate_against, oracle_checks
from t2vtrt.build.compare.tolerances import expected_precisions, graph_thresholds, load_tolerances
from t2vtrt.runtime.manifest import Manifest, load_manifest


def _with_source(engines: Path, source: Path) -> Manifest:
    """The tiny target's manifest, its model recorded as read from `source`."""
    manifest = load_manifest(engines)
    data = copy.deepcopy(manifest.data)
    data["model"]["source"] = str(source)
    return Manifest(data, manifest.root)


def _capture() -> ReferenceCapture:
    """A capture with settings only (the oracle refuses before it would read latents)."""
    return ReferenceCapture(Settings(2, 7.5, "ddim", 2, 32, 32))


def test_a_missing_model_directory_is_skipped_naming_it(tiny_engines: Path, small_eval: EvalSet, tmp_path: Path) -> None:
    manifest = _with_source(tiny_engines, tmp_path / "gone")
    videos = {"fp32": {"p0-s0": np.zeros((2, 32, 32, 3), np.uint8)}}
    checks, reference = oracle_checks(manifest, ArtifactPaths(tmp_path / "tiny"), small_eval, _capture(), videos, load_tolerances())
    (check,) = checks
    assert reference == {} and check.kind == KIND and check.status == SKIPPED
    assert str(tmp_path / "gone") in check.reason and "restore" in check.reason


def test_a_changed_model_directory_fails_naming_the_fix(tiny_paths: ArtifactPaths, tiny_engines: Path, small_eval: EvalSet, tmp_path: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(tiny_paths.model_dir, model)
    config = model / "scheduler" / "scheduler_config.json"
    config.write_text(config.read_text() + "\n")  # other weights or config than the target was built from
    videos = {"fp32": {"p0-s0": np.zeros((2, 32, 32, 3), np.uint8)}}
    checks, _ = oracle_checks(_with_source(tiny_engines, model), tiny_paths, small_eval, _capture(), videos, load_tolerances())
    (check,) = checks
    assert check.status == FAILED and len(check.failures) == 1
    assert "\n" not in check.failures[0] and "re-export and rebuild" in check.failures[0]


def test_a_precision_without_thresholds_fails() -> None:
    video = np.full((2, 16, 16, 3), 128, np.uint8)
    check = gate_against({"p0-s0": video}, "fp8", {"p0-s0": video}, load_tolerances())
    assert check.status == FAILED and "[diffusers.fp8]" in check.failures[-1]
    assert gate_against({"p0-s0": video}, "fp32", {"p0-s0": video}, load_tolerances()).status == PASSED


def test_a_stage_table_covers_every_component_of_the_stage() -> None:
    """A streaming decoder's next graph is gated by [graph.vae_decoder.*] unless it has a table of its own."""
    tolerances = copy.deepcopy(load_tolerances())
    own = graph_thresholds(tolerances, "vae_decoder", "fp32")
    assert graph_thresholds(tolerances, "vae_decoder_next", "fp32", "vae_decoder") == own
    assert graph_thresholds(tolerances, "vae_decoder_next", "fp32") is None
    assert expected_precisions(tolerances, "vae_decoder_next", "vae_decoder") == list(tolerances["graph"]["vae_decoder"])
    tolerances["graph"]["vae_decoder_next"] = {"fp32": {"rel_l2": 1e-6}}
    assert graph_thresholds(tolerances, "vae_decoder_next", "fp32", "vae_decoder") == {"rel_l2": 1e-6}
