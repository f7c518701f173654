"""`make bench`: build the bench model, then time runtime vs diffusers side by side (separate processes)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from t2vtrt.build.artifacts import ArtifactPaths
from t2vtrt.build.bench.host import host_info
from t2vtrt.build.compare.frames import psnr_per_frame, ssim_per_frame
from t2vtrt.runtime.files import atomic_path, write_json


def built_paths(model: str, artifacts: Path) -> ArtifactPaths:
    """The model's artifacts, which `make bench` (or `make engines MODEL=<model> GPU=cpu`) has built."""
    paths = ArtifactPaths(artifacts / model)
    if not (paths.engines_dir("cpu") / "manifest.json").is_file():
        # The stages have one driver (make / the CLI); the bench only measures what they built.
        raise SystemExit(f"error: {paths.engines_dir('cpu')} has no manifest.json: run `make engines MODEL={model} GPU=cpu` (or `make bench`) first")
    return paths


def stage_seconds(paths: ArtifactPaths) -> dict[str, float]:
    """Wall seconds of each build stage as its last run recorded them (logs/<stage>.json), calibration included."""
    logs = (json.loads(p.read_text()) for p in sorted((paths.root / "logs").glob("*.json")))
    return {record["stage"]: record["seconds"] for record in logs}


def run_side(side: str, settings: dict[str, Any], **extra: str) -> dict[str, Any]:
    """One worker process; its stdout's last line is its JSON figures."""
    cmd = [sys.executable, "-m", "t2vtrt.build.bench.worker", side]
    for key, value in {**settings, **extra}.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"bench worker {side} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def video_agreement(reference: np.ndarray, video: np.ndarray) -> dict[str, float]:
    """Per-frame PSNR / SSIM of a video against the FP32 runtime's (the compare stage's metrics), min and mean."""
    psnr, ssim = psnr_per_frame(reference, video), ssim_per_frame(reference, video)
    return {"psnr_min_db": float(psnr.min()), "psnr_mean_db": float(psnr.mean()), "ssim_min": float(ssim.min()), "ssim_mean": float(ssim.mean())}


def bench(model: str, artifacts: Path, repeats: int, steps: int | None) -> dict[str, Any]:
    """All figures of one run, including the ratios the issues ask for."""
    paths = built_paths(model, artifacts)
    engines = paths.engines_dir("cpu")
    manifest = json.loads((engines / "manifest.json").read_text())
    d = manifest["defaults"]
    settings = {
        "steps": steps or d["steps"],
        "frames": d["frames"],
        "height": d["height"],
        "width": d["width"],
        "guidance": d["guidance"],
        "repeats": repeats,
        "sampler": manifest["scheduler"]["default_sampler"],
    }
    work = Path(tempfile.mkdtemp(prefix="t2vtrt-bench-"))
    np.save(work / "latents.npy", np.random.default_rng(0).standard_normal(latent_shape(manifest), dtype=np.float32))
    common = {**settings, "latents": work / "latents.npy"}
    # The diffusers side is the family's own oracle (Family.reference) over the weights the target was built from.
    family, model_dir = manifest["model"]["family"], str(paths.model_dir)
    sides = {"diffusers": run_side("diffusers", common, family=family, model_dir=model_dir, video_out=str(work / "diffusers.npy"))}
    for precision in manifest["components"][first_denoiser(manifest)]["variants"]:
        sides[precision] = run_side("runtime", common, engines=str(engines), precision=precision, video_out=str(work / f"{precision}.npy"))
    report = summarize(model, settings, sides, work)
    report["build_stage_s"] = stage_seconds(paths)
    report["host"] = host_info()
    return report


def latent_shape(manifest: dict[str, Any]) -> tuple[int, ...]:
    """The initial latents (1, C, F', h, w) of the manifest's default request (F' after the VAE's temporal compression)."""
    d, lat = manifest["defaults"], manifest["latent"]
    factor = lat.get("temporal_factor", 1)
    frames = (d["frames"] - 1) // factor + 1 if factor > 1 else d["frames"]
    return (1, lat["channels"], frames, d["height"] // lat["spatial_factor"], d["width"] // lat["spatial_factor"])


def first_denoiser(manifest: dict[str, Any]) -> str:
    """The denoiser component whose variants are the bench's precisions (the manifest's first; `denoiser` in a v1 manifest)."""
    return manifest.get("denoisers", [{"component": "denoiser"}])[0]["component"]


def summarize(model: str, settings: dict[str, Any], sides: dict[str, dict[str, Any]], work: Path) -> dict[str, Any]:
    """Ratios from the per-process figures, and video agreement of each side with the FP32 runtime."""
    fp32, torch_side = sides["fp32"], sides["diffusers"]
    videos = {name: np.load(work / f"{name}.npy") for name in sides}
    report: dict[str, Any] = {
        "model": model,
        "settings": settings,
        "sides": sides,
        "runtime_vs_diffusers_speedup": torch_side["total_s"] / fp32["total_s"],
        "loop_overhead_fraction": fp32["loop_overhead_fraction"],
        "runtime_import_s": fp32["import_s"],
        "runtime_peak_rss_mb": fp32["peak_rss_mb"],
        "diffusers_peak_rss_mb": torch_side["peak_rss_mb"],
        "video_vs_fp32": {name: video_agreement(videos["fp32"], v) for name, v in videos.items() if name != "fp32"},
    }
    if "int8" in sides:
        report["int8_vs_fp32_speedup"] = fp32["total_s"] / sides["int8"]["total_s"]
        report["int8_vs_diffusers_speedup"] = torch_side["total_s"] / sides["int8"]["total_s"]
    return report


def markdown(report: dict[str, Any]) -> str:
    """A table a reviewer reads in a CI log."""
    lines = [
        f"# bench: {report['model']}",
        "",
        f"settings: {json.dumps(report['settings'])}",
        "",
        "| side | total s | loop overhead | peak RSS MB |",
        "|---|---|---|---|",
    ]
    for name, side in report["sides"].items():
        overhead = f"{side['loop_overhead_fraction']:.2%}" if "loop_overhead_fraction" in side else "-"
        lines.append(f"| {name} | {side['total_s']:.2f} | {overhead} | {side['peak_rss_mb']:.0f} |")
    lines += ["", *(f"- {k}: {v}" for k, v in report.items() if k not in ("sides", "settings", "model"))]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and write reports/bench.{json,md}."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="bench")
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    # Each side's figure is the median of its timed runs: one run moved ratios by ~5 % between two identical
    # `make bench` runs on this 2-core machine (diffusers 20.05 s vs 21.39 s).
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=None)
    args = parser.parse_args(argv)
    report = bench(args.model, args.artifacts, args.repeats, args.steps)
    reports = ArtifactPaths(args.artifacts / args.model).reports_dir
    write_json(reports / "bench.json", report)
    with atomic_path(reports / "bench.md") as tmp:
        tmp.write_text(markdown(report))
    sys.stdout.write(markdown(report))


if __name__ == "__main__":
    main()
