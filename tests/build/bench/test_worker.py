"""The bench's diffusers side runs the model family's own reference (Family.reference): wan-tiny's WanPipeline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from t2vtrt.build.artifacts import ArtifactPaths
from t2vtrt.build.bench import worker
from t2vtrt.build.bench.run import first_denoiser, latent_shape
from t2vtrt.build.families import get_family
from t2vtrt.runtime.errors import T2VError
from t2vtrt.runtime.pipeline import Pipeline


def _manifest(paths: ArtifactPaths) -> dict:  # type: ignore[type-arg]
    """The built cpu target's manifest.json."""
    return json.loads((paths.engines_dir("cpu") / "manifest.json").read_text())


def test_bench_latents_follow_the_manifest_layout(wan_paths: ArtifactPaths) -> None:
    """wan-tiny's 5 frames are 2 latent frames (temporal factor 4): the shape the runtime itself draws."""
    manifest = _manifest(wan_paths)
    d = manifest["defaults"]
    pipe = Pipeline.from_dir(wan_paths.engines_dir("cpu"))
    assert latent_shape(manifest) == pipe.latent_shape(1, d["frames"], d["height"], d["width"]) == (1, 4, 2, 2, 4)
    assert first_denoiser(manifest) == "denoiser"


def test_diffusers_side_runs_the_family_reference(wan_paths: ArtifactPaths, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The worker's diffusers side on wan-tiny: its video is WanPipeline's (the family oracle's) on the same latents."""
    manifest = _manifest(wan_paths)
    d = manifest["defaults"]
    latents = np.random.default_rng(0).standard_normal(latent_shape(manifest), dtype=np.float32)
    np.save(tmp_path / "latents.npy", latents)
    args = ["diffusers", "--family", "wan", "--model-dir", str(wan_paths.model_dir), "--latents", str(tmp_path / "latents.npy")]
    args += ["--video-out", str(tmp_path / "video.npy"), "--steps", "2", "--repeats", "1", "--guidance", str(d["guidance"])]
    args += ["--frames", str(d["frames"]), "--height", str(d["height"]), "--width", str(d["width"]), "--sampler", "unipc"]
    worker.main(args)
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["side"] == "diffusers" and figures["total_s"] > 0
    _, expected = get_family("wan").reference(wan_paths.model_dir).generate(worker.PROMPT, worker.NEGATIVE, 2, d["guidance"], latents, "unipc")
    assert np.array_equal(np.load(tmp_path / "video.npy"), expected[0])
    with pytest.raises(T2VError, match="no sampler 'ddim'"):
        worker.main([*args[:-2], "--sampler", "ddim"])


def test_bench_runs_a_wan_model(wan_paths: ArtifactPaths) -> None:
    """`make bench`'s driver on wan-tiny: the diffusers side (WanPipeline) and the runtime agree on the video."""
    from t2vtrt.build.bench.run import bench

    report = bench("wan-tiny", wan_paths.root.parent, repeats=1, steps=2)
    assert set(report["sides"]) == {"diffusers", "fp32"} and report["settings"]["sampler"] == "unipc"
    assert report["video_vs_fp32"]["diffusers"]["psnr_min_db"] > 60.0  # the same latents through WanPipeline
