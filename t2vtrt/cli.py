"""The `t2vtrt` command: one Click group, a thin subcommand per stage over the Python API."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from t2vtrt.runtime.errors import T2VError

ARTIFACTS = Path("artifacts")


def _artifact_paths(model: str, artifacts: Path):  # type: ignore[no-untyped-def]
    """artifacts/<name> for an embedded name or a model directory (its basename)."""
    from t2vtrt.build.artifacts import ArtifactPaths

    name = model if "/" not in model and not Path(model).is_dir() else Path(model).resolve().name
    return ArtifactPaths(artifacts / name)


model_option = click.option("--model", "-m", default="tiny", show_default=True, help="Embedded model name (tiny, bench) or a local diffusers directory.")
artifacts_option = click.option("--artifacts", type=click.Path(path_type=Path), default=ARTIFACTS, show_default=True, help="Root of all generated files.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or tables.")
@click.version_option(package_name="t2v-trt")
@click.pass_context
def cli(ctx: click.Context, quiet: bool) -> None:
    """Text-to-video diffusion -> ONNX -> TensorRT / ONNX Runtime artifacts, and the runtime that runs them."""
    ctx.obj = {"quiet": quiet}


@cli.command()
@model_option
@artifacts_option
@click.option("--exporter", type=click.Choice(["torchscript", "dynamo"]), default=None, help="Override the family's exporter.")
@click.pass_context
def export(ctx: click.Context, model: str, artifacts: Path, exporter: str | None) -> None:
    """Export text_encoder, denoiser and vae_decoder to ONNX (onnx/*.onnx + export.json)."""
    from t2vtrt.build.export import run_export
    from t2vtrt.build.progress import record_stage, task_bar

    start = time.perf_counter()
    with task_bar("export", 3, ctx.obj["quiet"]) as advance:
        info = run_export(model, artifacts, on_done=lambda name, s: advance(f"{name} {s:.1f}s"), exporter=exporter)
    paths = _artifact_paths(info["model"]["name"], artifacts)
    record_stage(paths.root, "1-export", time.perf_counter() - start, [paths.onnx(c) for c in info["components"]])


@cli.command()
@model_option
@artifacts_option
@click.option("--passes", default=None, help="Comma-separated pass names (default: the family's pipeline).")
@click.pass_context
def surgery(ctx: click.Context, model: str, artifacts: Path, passes: str | None) -> None:
    """Patch the exported graphs with onnx-graphsurgeon passes (onnx/*.opt.onnx + surgery.json)."""
    from t2vtrt.build.progress import record_stage, task_bar
    from t2vtrt.build.surgery.stage import run_surgery_stage

    paths = _artifact_paths(model, artifacts)
    start = time.perf_counter()
    with task_bar("surgery", 3, ctx.obj["quiet"]) as advance:
        report = run_surgery_stage(paths, passes.split(",") if passes else None, on_done=advance)
    record_stage(paths.root, "2-surgery", time.perf_counter() - start, [paths.onnx(c, "opt") for c in report["components"]])


@cli.command()
@model_option
@artifacts_option
@click.option("--gpu", default="auto", show_default=True, help="auto (detect; cpu when no GPU), cpu, or a GPU profile name (see `t2vtrt gpus`).")
@click.pass_context
def engines(ctx: click.Context, model: str, artifacts: Path, gpu: str) -> None:
    """Build the target directory: engines/<target>/ with manifest.json."""
    from t2vtrt.build.engines import build_engines, resolve_target
    from t2vtrt.build.progress import record_stage

    paths = _artifact_paths(model, artifacts)
    target = resolve_target(gpu)
    start = time.perf_counter()
    manifest = build_engines(paths, target, quiet=ctx.obj["quiet"])
    files = sorted(manifest.parent.iterdir())
    record_stage(paths.root, f"3-engines-{target}", time.perf_counter() - start, files)
    click.echo(str(manifest))


@cli.command()
@model_option
@artifacts_option
@click.pass_context
def summary(ctx: click.Context, model: str, artifacts: Path) -> None:
    """Print files, sizes and time per stage of the last build."""
    from t2vtrt.build.progress import console, summary_table

    if not ctx.obj["quiet"]:
        console.print(summary_table(_artifact_paths(model, artifacts).root))


@cli.command()
@click.argument("prompt")
@click.option("--engines", "engines_dir", required=True, type=click.Path(path_type=Path), help="A built target directory (holds manifest.json).")
@click.option("--output", "-o", required=True, type=click.Path(path_type=Path), help="Video file: .mp4, .gif or .png (one png per frame).")
@click.option("--steps", type=int, default=None, help="Denoising steps (default: the manifest's).")
@click.option("--guidance", type=float, default=None, help="Classifier-free guidance scale; <= 1 turns guidance off.")
@click.option("--frames", type=int, default=None)
@click.option("--height", type=int, default=None)
@click.option("--width", type=int, default=None)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--sampler", default=None, help="ddim, dpm++, dpm++karras, ... (default: the manifest's).")
@click.option("--negative-prompt", default="", help="What to steer away from.")
@click.option("--precision", default=None, help="fp32, int8, ... (default: the manifest's).")
@click.option("--low-vram", is_flag=True, help="Load each stage's engine only while it runs.")
@click.option("--fps", type=int, default=None)
@click.pass_context
def generate(ctx: click.Context, prompt: str, engines_dir: Path, output: Path, steps: int | None, guidance: float | None,
             frames: int | None, height: int | None, width: int | None, seed: int, sampler: str | None,
             negative_prompt: str, precision: str | None, low_vram: bool, fps: int | None) -> None:
    """Generate a video from PROMPT with the engines in --engines."""
    from t2vtrt.runtime.pipeline import Pipeline
    from t2vtrt.runtime.progress import step_bar
    from t2vtrt.runtime.video import write_video

    if not prompt.strip():
        raise T2VError("the prompt is empty: pass a text such as \"a red balloon rising over a lake\"")
    pipe = Pipeline.from_dir(engines_dir, precision=precision, low_vram=low_vram)
    total = steps or pipe.manifest.data["defaults"]["steps"]
    with step_bar(total, ctx.obj["quiet"]) as callback:
        video = pipe(prompt, negative_prompt=negative_prompt, steps=steps, guidance=guidance, frames=frames,
                     height=height, width=width, seed=seed, sampler=sampler, callback=callback)
    path = write_video(video, output, fps or pipe.manifest.data["defaults"].get("fps", 8))
    click.echo(f"{path}  {video.shape[0]} frames {video.shape[2]}x{video.shape[1]}  {pipe.timings.total_s:.2f}s")


def main() -> None:
    """Entry point: T2VError becomes one line on stderr and exit code 2, never a traceback."""
    try:
        cli.main(standalone_mode=False)
    except T2VError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
