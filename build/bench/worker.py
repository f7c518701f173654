"""One side of the benchmark, run in a fresh process: prints one JSON line of figures.

Each framework gets its own process because ONNX Runtime's spinning threads slow PyTorch
3-7x when both live in one process.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

from t2vtrt.runtime.errors import T2VError

PROMPT, NEGATIVE = "a red balloon rising over a lake", ""


def _peak_rss_mb() -> float:
    """Peak resident memory of this process (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_runtime(args: argparse.Namespace) -> dict:  # type: ignore[type-arg]
    """Time t2vtrt.runtime over a built target; import time measured from a cold interpreter."""
    start = time.perf_counter()
    import onnxruntime  # noqa: F401  (the backend the cpu target runs: part of the runtime's import cost)

    from t2vtrt.runtime.pipeline import Pipeline

    import_s = time.perf_counter() - start
    pipe = Pipeline.from_dir(args.engines, precision=args.precision)
    latents = np.load(args.latents)
    call = dict(steps=args.steps, guidance=args.guidance, frames=args.frames, height=args.height, width=args.width, sampler=args.sampler)
    pipe(PROMPT, latents=latents, **{**call, "steps": 1})  # warm-up: first-run allocations and kernel selection
    times, video = [], None
    for _ in range(args.repeats):
        video = pipe(PROMPT, latents=latents, **call)
        times.append(pipe.timings.total_s)
    t = pipe.timings
    denoiser_s = t.engine_s["denoiser"]
    np.save(args.video_out, video)
    return {
        "side": f"runtime-{args.precision or 'default'}",
        "import_s": import_s,
        "total_s": float(np.median(times)),
        "loop_s": t.loop_s,
        "denoiser_engine_s": denoiser_s,
        "loop_overhead_fraction": (t.loop_s - denoiser_s) / t.loop_s,
        "peak_rss_mb": _peak_rss_mb(),
    }


def run_diffusers(args: argparse.Namespace) -> dict:  # type: ignore[type-arg]
    """Time the family's diffusers reference (Family.reference) on the same weights, latents, steps and shapes."""
    import torch

    from t2vtrt.build.families import get_family

    oracle = get_family(args.family).reference(Path(args.model_dir))
    if args.sampler not in oracle.SAMPLERS:
        raise T2VError(f"the {args.family} reference has no sampler {args.sampler!r}: pass --sampler {' or '.join(oracle.SAMPLERS)}")
    latents = np.load(args.latents)
    oracle.generate(PROMPT, NEGATIVE, 1, args.guidance, latents, args.sampler)  # warm-up
    times, video = [], None
    for _ in range(args.repeats):
        start = time.perf_counter()
        _, video = oracle.generate(PROMPT, NEGATIVE, args.steps, args.guidance, latents, args.sampler)
        times.append(time.perf_counter() - start)
    np.save(args.video_out, video[0])
    return {"side": "diffusers", "torch_threads": torch.get_num_threads(), "total_s": float(np.median(times)), "peak_rss_mb": _peak_rss_mb()}


def main(argv: list[str] | None = None) -> None:
    """Parse the side and its settings, run it, print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("side", choices=["runtime", "diffusers"])
    parser.add_argument("--engines", type=Path)
    parser.add_argument("--model-dir")
    parser.add_argument("--family", default="unet3d", help="the model family whose diffusers reference the diffusers side runs")
    parser.add_argument("--precision")
    parser.add_argument("--latents", required=True)
    parser.add_argument("--video-out", required=True)
    for name, kind in (("steps", int), ("frames", int), ("height", int), ("width", int), ("repeats", int), ("guidance", float)):
        parser.add_argument(f"--{name}", type=kind, required=True)
    parser.add_argument("--sampler", default="ddim")
    args = parser.parse_args(argv)
    figures = run_runtime(args) if args.side == "runtime" else run_diffusers(args)
    sys.stdout.write(json.dumps(figures) + "\n")


if __name__ == "__main__":
    main()
