"""The `t2vtrt` command: one Click group, a thin subcommand per stage over the Python API."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from t2vtrt.runtime.errors import T2VError, os_error

ARTIFACTS = Path("artifacts")


model_option = click.option(
    "--model", "-m", default="shapes", show_default=True, help="Embedded model name (shapes, tiny, bench) or a local diffusers directory."
)
artifacts_option = click.option(
    "--artifacts", type=click.Path(path_type=Path), default=ARTIFACTS, show_default=True, help="Root of all generated files."
)


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
    from t2vtrt.build import stages

    stages.export(model, artifacts, ctx.obj["quiet"], exporter)


@cli.command()
@model_option
@artifacts_option
@click.option("--passes", default=None, help="Comma-separated pass names (default: the family's pipeline).")
@click.pass_context
def surgery(ctx: click.Context, model: str, artifacts: Path, passes: str | None) -> None:
    """Patch the exported graphs with onnx-graphsurgeon passes (onnx/*.opt.onnx + surgery.json)."""
    from t2vtrt.build import stages

    stages.surgery(model, artifacts, ctx.obj["quiet"], passes.split(",") if passes else None)


@cli.command()
@model_option
@artifacts_option
@click.option("--gpu", default="auto", show_default=True, help="auto (detect; cpu when no GPU), cpu, or a GPU profile name (see `t2vtrt gpus`).")
@click.option(
    "--dry-run", is_flag=True, help="GPU targets: print and write engines/<gpu>/plan.json (sources, profiles, VRAM estimate); build nothing."
)
@click.option("--low-vram", is_flag=True, help="GPU targets: plan for loading one stage's engine at a time (the runtime's --low-vram).")
@click.option(
    "--version-compatible",
    is_flag=True,
    help="GPU targets: version-compatible engines (each embeds its lean runtime; runs on this TensorRT or any later one).",
)
@click.option(
    "--hardware-compat",
    type=click.Choice(["none", "ampere_plus", "same_compute_capability"]),
    default=None,
    help="GPU targets: TensorRT hardware-compatibility level (default: the GPU profile's).",
)
@click.pass_context
def engines(
    ctx: click.Context, model: str, artifacts: Path, gpu: str, dry_run: bool, low_vram: bool, version_compatible: bool, hardware_compat: str | None
) -> None:
    """Build the target directory: engines/<target>/ with manifest.json."""
    from t2vtrt.build import stages
    from t2vtrt.build.engines import resolve_target
    from t2vtrt.build.wan_realsize import is_config_only

    if is_config_only(Path(model).expanduser()):  # a wan directory without weights: planned from its configs alone
        from t2vtrt.build.engines.config_plan import run_config_plan

        click.echo(str(run_config_plan(model, artifacts, resolve_target(gpu), dry_run, low_vram)))
        return
    stages.built_paths(model, artifacts)  # an unbuilt model is refused before the GPU is probed
    manifest = stages.engines(model, artifacts, resolve_target(gpu), ctx.obj["quiet"], dry_run, low_vram, version_compatible, hardware_compat)
    click.echo(str(manifest))


@cli.command()
@model_option
@artifacts_option
@click.pass_context
def summary(ctx: click.Context, model: str, artifacts: Path) -> None:
    """Print files, sizes and time per stage of the last build."""
    from t2vtrt.build.stage_record import summary_table
    from t2vtrt.build.stages import built_paths
    from t2vtrt.build.task_progress import console

    root = built_paths(model, artifacts).root
    if not (root / "logs").is_dir() or not any((root / "logs").glob("*.json")):
        raise T2VError(f"no build of model {model!r} has finished under {artifacts}: run `make engines MODEL={model}` first")
    if not ctx.obj["quiet"]:
        console.print(summary_table(root))


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
def generate(
    ctx: click.Context,
    prompt: str,
    engines_dir: Path,
    output: Path,
    steps: int | None,
    guidance: float | None,
    frames: int | None,
    height: int | None,
    width: int | None,
    seed: int,
    sampler: str | None,
    negative_prompt: str,
    precision: str | None,
    low_vram: bool,
    fps: int | None,
) -> None:
    """Generate a video from PROMPT with the engines in --engines."""
    from t2vtrt.runtime.pipeline import Pipeline
    from t2vtrt.runtime.step_progress import step_bar
    from t2vtrt.runtime.video import check_output, check_fps, write_video

    check_output(output)  # before minutes of denoising, not after
    if fps is not None:
        check_fps(fps)
    pipe = Pipeline.from_dir(engines_dir, precision=precision, low_vram=low_vram)
    total = pipe.manifest.data["defaults"]["steps"] if steps is None else steps
    with step_bar(total, ctx.obj["quiet"]) as callback:
        result = pipe.generate(
            prompt,
            negative_prompt=negative_prompt,
            steps=steps,
            guidance=guidance,
            frames=frames,
            height=height,
            width=width,
            seed=seed,
            sampler=sampler,
            callback=callback,
        )
    for line in result.warnings:
        click.echo(f"warning: {line}", err=True)
    video = result.frames
    path = write_video(video, output, pipe.manifest.data["defaults"].get("fps", 8) if fps is None else fps)
    click.echo(f"{path}  {video.shape[0]} frames {video.shape[2]}x{video.shape[1]} (WxH)  {result.timings.total_s:.2f}s")


@cli.command()
@click.option("--resolve", default=None, help="Print the target NAME resolves to (auto -> the detected GPU's profile, or cpu) and exit.")
def gpus(resolve: str | None) -> None:
    """List the GPU profiles (build/gpus/*.toml); * marks this machine's GPU."""
    from t2vtrt.build.gpus.detect import auto_profile
    from t2vtrt.build.gpus.profiles import PROFILES_DIR, list_profiles, load_profile, profile_table

    if resolve is not None:
        from t2vtrt.build.engines import resolve_target

        target = resolve_target(resolve)
        click.echo(target if target == "cpu" else load_profile(target).name)
        return
    try:
        detected = auto_profile()
    except T2VError as exc:  # an unknown GPU must not hide the list
        click.echo(f"note: {exc}", err=True)
        detected = None
    for line in profile_table(list_profiles(), detected):
        click.echo(line)
    click.echo(f"\nprofiles: {PROFILES_DIR} (adding a GPU is adding a file); detected: {detected or 'no NVIDIA GPU'}")


@cli.command("gpu-check")
@model_option
@artifacts_option
def gpu_check(model: str, artifacts: Path) -> None:
    """On an NVIDIA GPU: build the model's engines, compare them with ONNX Runtime, generate a video; PASS/FAIL per step."""
    from t2vtrt.build.gpus.check import run_gpu_check

    if not run_gpu_check(artifacts, model, echo=click.echo):
        sys.exit(1)


tolerances_option = click.option(
    "--tolerances", type=click.Path(path_type=Path, dir_okay=False), default=None, help="Thresholds file (default: build/compare/tolerances.toml)."
)


@cli.command()
@model_option
@artifacts_option
@click.option("--gpu", default="auto", show_default=True, help="Which target to compare: auto, cpu or a GPU profile name.")
@click.option(
    "--engines",
    "engines_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="A built target directory (default: artifacts/<model>/engines/<gpu>).",
)
@tolerances_option
@click.option(
    "--eval",
    "eval_file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Prompts and seeds (default: build/compare/eval-<model>.toml if present, else eval.toml).",
)
@click.option(
    "--golden",
    "golden_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Golden set to compare with (default: artifacts/<model>/golden when it exists).",
)
@click.option("--save-golden", is_flag=True, help="Store this run's FP32 reference inputs, outputs and videos as the golden set.")
@click.pass_context
def compare(
    ctx: click.Context,
    model: str,
    artifacts: Path,
    gpu: str,
    engines_dir: Path | None,
    tolerances: Path | None,
    eval_file: Path | None,
    golden_dir: Path | None,
    save_golden: bool,
) -> None:
    """Compare every built variant with the FP32 ONNX reference (per graph, video) and the family's diffusers pipeline; exit 1 on a failed gate."""
    from t2vtrt.build.compare import load_tolerances, run_compare
    from t2vtrt.build.compare.capture import load_eval_set
    from t2vtrt.build.compare.stage import step_count
    from t2vtrt.build.engines import resolve_target
    from t2vtrt.build.stages import artifact_paths
    from t2vtrt.build.task_progress import task_bar

    paths = None if engines_dir else artifact_paths(model, artifacts)
    target_dir = engines_dir or paths.engines_dir(resolve_target(gpu))
    with task_bar("compare", step_count(target_dir), ctx.obj["quiet"]) as advance:
        run = run_compare(
            target_dir, paths, load_tolerances(tolerances), load_eval_set(eval_file) if eval_file else None, golden_dir, save_golden, on_step=advance
        )
    if not ctx.obj["quiet"]:
        click.echo((run.reports_dir / "accuracy.md").read_text())
    _gate_exit("accuracy", run.passed, run.failures, run.reports_dir / "accuracy.md")


@cli.command()
@model_option
@artifacts_option
@click.option("--gpu", default="auto", show_default=True, help="auto (detect; cpu when no GPU), cpu, or a GPU profile name.")
@click.option("--bench/--no-bench", default=False, show_default=True, help="Also run the benchmark on the night's build and gate its figures.")
@tolerances_option
@click.option("--keep", type=int, default=7, show_default=True, help="Nightly builds kept on disk (the latest good one always stays).")
@click.pass_context
def nightly(ctx: click.Context, model: str, artifacts: Path, gpu: str, bench: bool, tolerances: Path | None, keep: int) -> None:
    """Rebuild every stage from scratch, compare, bench, append history.jsonl; promote to latest only when it passes."""
    from t2vtrt.build.compare import load_tolerances
    from t2vtrt.build.engines import resolve_target
    from t2vtrt.build.nightly.run import bench_module, run_nightly  # nightly runs the stages through build/stages.py

    target = resolve_target(gpu)
    say = (lambda s: None) if ctx.obj["quiet"] else (lambda s: click.echo(f"nightly: {s}", err=True))
    night = run_nightly(
        model, target, artifacts, bench=bench_module if bench else None, tolerances=load_tolerances(tolerances), keep=keep, on_step=say
    )
    click.echo(f"nightly {night.entry['date']} {target}: build {night.build_root}; latest -> {night.latest.resolve()}")
    _gate_exit("nightly", night.passed, night.failures, night.build_root)


def _gate_exit(what: str, passed: bool, failures: list[str], where: Path) -> None:
    """Print the verdict; exit 1 with one `FAILED <line>` per failure when a gate failed."""
    if passed:
        click.echo(f"{what}: PASSED ({where})")
        return
    for line in failures:
        click.echo(f"FAILED {line}", err=True)
    click.echo(f"{what}: FAILED ({where})", err=True)
    sys.exit(1)


@cli.command()
@model_option
@artifacts_option
@click.option(
    "--plan",
    "plan_file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="A hand-edited precision_plan.json to use instead of the sensitivity sweep.",
)
@click.option(
    "--method",
    default=None,
    help="Activation ranges: mse (least expected INT8 error), entropy (KL over 2048-bin histograms) or max (default: budgets.json's, mse).",
)
@click.option("--samples", type=int, default=None, help="Denoiser calls to capture (default: calibration/budgets.json).")
@click.option("--seed", type=int, default=None, help="Seed of the captured runs (default: calibration/budgets.json).")
@click.option("--trt-version", default=None, help="TensorRT version written in the calibration cache header (default: installed, else 10.13.0).")
@click.option(
    "--budget",
    "budget_name",
    default=None,
    help="A calibration/budgets.json entry to use (e.g. large) instead of the model's own or its size tier's; quantize's gate uses it too.",
)
@click.pass_context
def calibrate(
    ctx: click.Context,
    model: str,
    artifacts: Path,
    plan_file: Path | None,
    method: str | None,
    samples: int | None,
    seed: int | None,
    trt_version: str | None,
    budget_name: str | None,
) -> None:
    """Capture denoiser inputs, calibrate INT8 scales, decide FP16 fallbacks (calib/: denoiser.npz, denoiser.cache, precision_plan.json)."""
    from t2vtrt.build import stages

    done = stages.calibrate(model, artifacts, ctx.obj["quiet"], plan_file, method, samples, seed, trt_version, budget_name)
    click.echo(stages.calibrate_line(done))


@cli.command()
@model_option
@artifacts_option
@click.option(
    "--calibration-cache",
    "cache_file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Import activation scales from a TensorRT calibration cache instead of calib/denoiser.cache.",
)
@click.pass_context
def quantize(ctx: click.Context, model: str, artifacts: Path, cache_file: Path | None) -> None:
    """Write onnx/denoiser.int8{,-cpuverify,-u8s8}.onnx from the plan and scales, gated against FP32."""
    from t2vtrt.build import stages

    for line in stages.quantize_lines(stages.quantize(model, artifacts, ctx.obj["quiet"], cache_file)):
        click.echo(line)


@cli.command("int8-attribution")
@model_option
@artifacts_option
@click.option(
    "--variant",
    type=click.Choice(["u8s8", "int8-qdq"]),
    default="u8s8",
    show_default=True,
    help="Which quantized graph: the cpu target's U8S8, or the TensorRT graph's scales in FP32 (int8-qdq).",
)
@click.option("--prompts", "prompt_count", type=click.IntRange(1), default=None, help="Held-out prompts (default: the gate's).")
@click.pass_context
def int8_attribution(ctx: click.Context, model: str, artifacts: Path, variant: str, prompt_count: int | None) -> None:
    """Where INT8 error comes from, on the videos: each sampler step alone, the first k steps in FP32, each CFG branch."""
    from t2vtrt.build.artifacts import build_lock
    from t2vtrt.build.stages import built_paths
    from t2vtrt.calibration.attribution import run_attribution

    paths = built_paths(model, artifacts)
    with build_lock(paths.root):
        report = run_attribution(paths, variant, prompt_count, on_row=None if ctx.obj["quiet"] else lambda r: click.echo(r, err=True))
    click.echo(report)


@cli.command("train-shapes")
@click.option(
    "--config", type=click.Path(path_type=Path, dir_okay=False), default=None, help="Training config (default: build/shapes/train_config.json)."
)
@click.option(
    "--work",
    type=click.Path(path_type=Path),
    default=Path("artifacts/shapes-train"),
    show_default=True,
    help="Checkpoints, loss logs and caches; rerun with the same --work to resume.",
)
@click.option(
    "--out", type=click.Path(path_type=Path), default=None, help="Where the trained model goes (default: build/shapes/model, the shipped copy)."
)
@click.pass_context
def train_shapes(ctx: click.Context, config: Path | None, work: Path, out: Path | None) -> None:
    """Train the embedded `shapes` model (VAE, then UNet3D) on synthetic clips; resumable."""
    from t2vtrt.build.shapes import train

    train.run(
        config or train.CONFIG, work, out or train.SHIPPED, quiet=ctx.obj["quiet"], summary=train.SUMMARY if out is None else None, echo=click.echo
    )


@cli.command("eval-adherence")
@click.option("--engines", "engines_dir", required=True, type=click.Path(path_type=Path), help="A built target directory (holds manifest.json).")
@click.option(
    "--prompts",
    "prompt_set",
    type=click.Choice(["heldout", "train"]),
    default="heldout",
    show_default=True,
    help="heldout: color/shape/motion combinations never seen in training.",
)
@click.option("--steps", type=int, default=15, show_default=True)
@click.option("--guidance", type=float, default=7.5, show_default=True)
@click.option("--seeds", type=int, default=1, show_default=True, help="Seeds per prompt (0..N-1).")
@click.option("--precision", default=None, help="fp32, int8, ... (default: the manifest's).")
@click.option("--json", "json_out", type=click.Path(path_type=Path, dir_okay=False), default=None, help="Also write every score here.")
@click.option("--gate", type=float, default=None, help="Exit 1 when color or motion accuracy is below this (e.g. 0.8).")
@click.pass_context
def eval_adherence(
    ctx: click.Context,
    engines_dir: Path,
    prompt_set: str,
    steps: int,
    guidance: float,
    seeds: int,
    precision: str | None,
    json_out: Path | None,
    gate: float | None,
) -> None:
    """Prompt adherence of the `shapes` model: detected color, shape and motion vs the prompt, per attribute."""
    from t2vtrt.build.shapes import adherence, data
    from t2vtrt.build.task_progress import task_bar
    from t2vtrt.runtime.files import write_json
    from t2vtrt.runtime.pipeline import Pipeline

    pipe = Pipeline.from_dir(engines_dir, precision=precision)
    prompts = data.prompt_set(prompt_set)
    with task_bar("adherence", len(prompts) * seeds, ctx.obj["quiet"]) as advance:
        report = adherence.evaluate(pipe, prompts, steps, guidance, range(seeds), on_done=advance)
    report.update({"engines": str(engines_dir), "prompts": prompt_set, "precision": precision or "default"})
    if json_out:
        write_json(json_out, report)
    acc = report["accuracy"]
    click.echo(f"{prompt_set}: {report['n']} videos, {steps} steps, guidance {guidance}")
    for name, value in acc.items():
        click.echo(f"  {name:<10} {100 * value:5.1f} %")
    if gate is not None and min(acc["color"], acc["motion"]) < gate:
        click.echo(f"FAILED: color and motion must be >= {100 * gate:.0f} %", err=True)
        sys.exit(1)


@cli.command("make-realsize-model")
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="Where the diffusers directory goes (then `t2vtrt export --model OUT`); about 7.3 GB.",
)
@click.option("--seed", type=int, default=0, show_default=True)
def make_realsize_model(out: Path, seed: int) -> None:
    """Random-weight zeroscope_v2_576w-size model (UNet3D 1.41B, CLIP-H text, SD VAE), made by code."""
    from t2vtrt.build.realsize import make_realsize_model as make

    result = make(out, seed)
    click.echo(f"{result['path']}: " + ", ".join(f"{k} {v / 1e6:,.1f}M parameters" for k, v in result["parameters"].items()))


@cli.command("realsize")
@click.option(
    "--model",
    "model_dir",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="The real-size model directory (`make realsize-model` writes one).",
)
@artifacts_option
@click.option("--int8/--no-int8", default=True, show_default=True, help="Run calibration (INT8) before the cpu engines.")
@click.option("--gpus", default="rtx3060,rtx4060,rtx4090", show_default=True, help="GPU profiles to dry-run plan.")
def realsize(model_dir: Path, artifacts: Path, int8: bool, gpus: str) -> None:
    """Every stage on a real-size model, timed with peak RSS, plus dry-run VRAM plans -> reports/realsize.{json,md}."""
    from t2vtrt.build.realsize_report import run_all

    report = run_all(model_dir, artifacts, int8, tuple(g for g in gpus.split(",") if g))
    click.echo(report["log"].replace(".log", ".md"))


@cli.command("triton-repo")
@click.option("--engines", "engines_dir", required=True, type=click.Path(path_type=Path), help="A built target directory (holds manifest.json).")
@click.option(
    "--output",
    "-o",
    "repo",
    required=True,
    type=click.Path(path_type=Path),
    help="The model repository folder (created; other models in it are kept).",
)
@click.option("--name", default=None, help="Triton model name (default: the manifest's model name).")
@click.option(
    "--version",
    "version",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="Model version folder to write or replace; others stay (A/B rollouts).",
)
@click.option("--instances", type=click.IntRange(1), default=1, show_default=True, help="Model instances (processes) per device.")
@click.option("--precision", default=None, help="Denoiser precision this version runs: fp32, int8, ... (default: the manifest's).")
@click.option("--threads", type=click.IntRange(0), default=0, show_default=True, help="ONNX Runtime threads per instance (0: every core).")
@click.option("--dynamic-batching/--no-dynamic-batching", default=True, show_default=True, help="Let Triton gather requests into denoiser batches.")
@click.option(
    "--max-queue-delay-ms", type=click.FloatRange(0), default=20.0, show_default=True, help="How long a request may wait for others to fill a batch."
)
@click.option(
    "--max-queue-size", type=click.IntRange(0), default=32, show_default=True, help="Queued requests beyond this are rejected at once (0: unbounded)."
)
@click.option(
    "--queue-timeout-ms",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="Reject a request queued longer than this (0: never; clients may set their own).",
)
@click.option("--cache/--no-cache", default=True, show_default=True, help="Answer identical requests from the server's response cache.")
@click.option(
    "--python-env",
    default="auto",
    show_default=True,
    help="EXECUTION_ENV_PATH for the Python backend: auto (the env `make serve-setup` makes, if present), "
    "none (the server's own Python) or a virtualenv folder.",
)
def triton_repo(
    engines_dir: Path,
    repo: Path,
    name: str | None,
    version: int,
    instances: int,
    precision: str | None,
    threads: int,
    dynamic_batching: bool,
    max_queue_delay_ms: float,
    max_queue_size: int,
    queue_timeout_ms: int,
    cache: bool,
    python_env: str,
) -> None:
    """Write a Triton Inference Server model repository that serves --engines (docs/serving.md)."""
    from t2vtrt.build.triton.config import ServeSettings
    from t2vtrt.build.triton.repository import resolve_python_env, write_repository

    settings = ServeSettings(
        name=name,
        version=version,
        instances=instances,
        dynamic_batching=dynamic_batching,
        max_queue_delay_ms=max_queue_delay_ms,
        max_queue_size=max_queue_size,
        queue_timeout_ms=queue_timeout_ms,
        cache=cache,
        precision=precision,
        threads=threads,
        python_env=resolve_python_env(python_env),
    )
    written = write_repository(engines_dir, repo, settings)
    click.echo(f"{written.version_dir}  model {written.name!r} version {written.version}; config {written.config}")


@cli.command("triton-serve")
@click.option("--repo", required=True, type=click.Path(path_type=Path, file_okay=False), help="A model repository written by `t2vtrt triton-repo`.")
@click.option("--http-port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--grpc-port", type=click.IntRange(1, 65535), default=8001, show_default=True)
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=8002, show_default=True)
@click.option("--cache-mb", type=click.IntRange(0), default=256, show_default=True, help="Response cache size (0: no cache).")
@click.option(
    "--server",
    "binary",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="A tritonserver binary (default: $T2V_TRITONSERVER, PATH, then the one `make serve-setup` installs).",
)
def triton_serve(repo: Path, http_port: int, grpc_port: int, metrics_port: int, cache_mb: int, binary: Path | None) -> None:
    """Run tritonserver on loopback over --repo until Ctrl-C (its log goes to REPO/../triton-server.log)."""
    import signal

    from t2vtrt.build.triton.server import LocalServer, Ports

    if not (repo / ".").is_dir() or not any(repo.glob("*/config.pbtxt")):
        raise T2VError(f"{repo} holds no model (no */config.pbtxt): write one with `t2vtrt triton-repo --engines DIR -o {repo}`")
    server = LocalServer(repo, repo.resolve().parent / "triton-server.log", Ports(http_port, grpc_port, metrics_port), cache_mb, binary)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill` stops the server too, as Ctrl-C does
    with server:
        click.echo(
            f"tritonserver ready: http://{server.http_url} (KServe v2), grpc 127.0.0.1:{grpc_port}, metrics {server.metrics_url}; "
            f"log {server.log_file}; Ctrl-C stops it"
        )
        try:
            code = server.process.wait()  # type: ignore[union-attr]
        except KeyboardInterrupt:
            return
    raise T2VError(f"tritonserver exited with code {code}: {server.log_tail()} (full log: {server.log_file})")


def main() -> None:
    """Entry point: T2VError becomes one line on stderr and exit code 2, never a traceback."""
    # Never reach for a model hub: models are local directories or made by code.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        cli.main(standalone_mode=False)
    except T2VError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except OSError as exc:  # a file-system fault no stage names itself (full disk, permissions): still one line
        click.echo(f"error: {os_error(exc, 'reading or writing a file')}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.UsageError as exc:  # a mistyped option or value: one line naming it and where the help is
        command = exc.ctx.command_path if exc.ctx else "t2vtrt"
        click.echo(f"error: {exc.format_message().rstrip('.')}; see `{command} --help`", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
