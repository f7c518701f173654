"""`t2vtrt gpu-check` / `make gpu-check`: prove the TensorRT path on this machine's GPU in one command.

Steps, one table row each with its result, figures and seconds, stopping at the first failure
(exit 1, the step named): the `gpu` extra installed with one CUDA major (and onnxruntime-gpu as the
only ONNX Runtime), the GPU and its profile, export + surgery, calibrate + quantize on ONNX Runtime's
CUDA provider (the INT8 Q/DQ+FP16 denoiser, the one graph no CPU can validate), the build (a row
per engine: precision, size), every engine against the FP32 ONNX graph on ONNX Runtime through
polygraphy (tolerances from _tolerances.toml), and a video through the runtime (resident and
--low-vram, which must agree).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from t2vtrt.runtime.errors import T2VError

TOLERANCES = Path(__file__).parent / "_tolerances.toml"
Echo = Callable[[str], None]
Row = tuple[str, bool, str, "float | None"]
Step = tuple[str, Callable[["CheckState"], str]]
INT8_DENOISER = ("denoiser", "int8")
GPU_EXTRA_MODULES = {"tensorrt": "tensorrt", "cuda.bindings": "cuda-python", "pynvml": "nvidia-ml-py"}
HEADER = f"{'step':<34} {'result':<6} {'seconds':>8}  detail"


@dataclass
class CheckState:
    """What earlier steps found, for the later ones."""

    artifacts: Path
    model: str
    profile: str = ""
    engines: Path | None = None
    rows: list[Row] = field(default_factory=list)  # (step, passed, detail, seconds)
    references: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # component -> ONNX Runtime outputs


def load_tolerances(path: Path = TOLERANCES) -> dict[str, dict[str, float]]:
    """Per precision: max_rel_l2 and min_cosine."""
    from t2vtrt.build.gpus.profiles import read_toml

    return read_toml(path)


def compare_metrics(actual: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Relative L2, max abs difference and cosine similarity (float64)."""
    a, r = actual.astype(np.float64).ravel(), reference.astype(np.float64).ravel()
    norm = np.linalg.norm(r)
    cosine = float(a @ r / (np.linalg.norm(a) * norm)) if norm and np.linalg.norm(a) else float(np.array_equal(a, r))
    return {
        "rel_l2": float(np.linalg.norm(a - r) / norm) if norm else float(np.linalg.norm(a)),
        "max_abs": float(np.abs(a - r).max()) if a.size else 0.0,
        "cosine": cosine,
    }


def within(metrics: dict[str, float], tolerance: dict[str, float]) -> bool:
    """True when the metrics meet the precision's tolerance."""
    return metrics["rel_l2"] <= tolerance["max_rel_l2"] and metrics["cosine"] >= tolerance["min_cosine"]


def sample_feeds(spec: dict[str, Any], seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs at the opt shape of a manifest component (inside each input's value range)."""
    from t2vtrt.build.families.spec import resolve_shape

    rng = np.random.default_rng(seed)
    axes = {a: r[1] for a, r in spec["axes"].items()}
    feeds = {}
    for tensor in spec["inputs"]:
        shape = resolve_shape(tuple(tensor["shape"]), axes)
        lo, hi = tensor.get("value_range", (0, 100) if tensor["dtype"].startswith("int") else (None, None))
        if tensor["dtype"].startswith("int"):
            feeds[tensor["name"]] = rng.integers(int(lo), int(hi) + 1, size=shape).astype(tensor["dtype"])
        elif lo is not None:
            feeds[tensor["name"]] = rng.uniform(lo, hi, size=shape).astype(tensor["dtype"])
        else:
            feeds[tensor["name"]] = rng.standard_normal(shape).astype(tensor["dtype"])
    return feeds


def cuda_majors() -> tuple[int | None, int | None]:
    """(CUDA major of the installed TensorRT wheel, major of cuda-python), None where not installed."""
    wheels = ((12, "tensorrt-cu12"), (13, "tensorrt-cu13"), (12, "tensorrt-lean-cu12"), (13, "tensorrt-lean-cu13"))
    trt_cuda = next((major for major, dist in wheels if _installed(dist)), None)
    bindings = _installed("cuda-python") or _installed("cuda-bindings")
    return trt_cuda, int(bindings.split(".")[0]) if bindings else None


def _installed(dist: str) -> str | None:
    """A distribution's version, or None."""
    import importlib.metadata

    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def check_cuda_pairing(trt_cuda: int | None, cuda_python: int | None) -> None:
    """TensorRT and cuda-python must target one CUDA major (13 needs driver r580+, 12 runs on r535+)."""
    if trt_cuda is None or cuda_python is None or trt_cuda == cuda_python:
        return
    raise T2VError(
        f"TensorRT is built for CUDA {trt_cuda} but cuda-python {cuda_python}.x for CUDA {cuda_python}: reinstall one "
        "extra, pip install -e '.[build-tools,gpu]' (CUDA 12, driver r535+) or '.[build-tools,gpu-cu13]' (CUDA 13, driver r580+)"
    )


def missing_gpu_extra() -> list[str]:
    """The `gpu` extra's distributions whose modules cannot be found here (nothing is imported)."""
    import importlib.util

    missing = []
    for module, dist in GPU_EXTRA_MODULES.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        missing += [] if found else [dist]
    return missing


def gpu_test_gate(has_gpu: bool, missing: list[str]) -> tuple[str, str] | None:
    """For `gpu`-marked tests: skip without a GPU, fail on a GPU machine lacking the extra, else run (None)."""
    if not has_gpu:
        return "skip", "needs an NVIDIA GPU (no CUDA device / nvidia-smi on this machine)"
    if missing:
        return "fail", (
            f"this machine has an NVIDIA GPU but not the gpu extra ({', '.join(missing)} missing): "
            "pip install -e '.[build-tools,dev,gpu]' (or '.[build-tools,dev,gpu-cu13]' on driver r580+)"
        )
    return None


def step_install(state: CheckState) -> str:
    """The gpu extra imports (tensorrt, polygraphy, nvidia-ml-py), TensorRT shares cuda-python's CUDA major, ONNX Runtime has CUDA."""
    from t2vtrt.build.engines.tensorrt import import_tensorrt

    trt = import_tensorrt()
    try:
        import pynvml  # noqa: F401 - detection uses it
    except ImportError as exc:
        raise T2VError("nvidia-ml-py is not installed: pip install -e '.[build-tools,gpu]'") from exc
    trt_cuda, cuda_python = cuda_majors()
    check_cuda_pairing(trt_cuda, cuda_python)
    bindings = f"cuda-python {cuda_python}.x" if cuda_python else "no cuda-python (polygraphy's libcudart fallback)"
    return f"TensorRT {trt.__version__} (CUDA {trt_cuda or '?'}), {bindings}, {onnxruntime_with_cuda()}"


def onnxruntime_with_cuda() -> str:
    """The installed ONNX Runtime is onnxruntime-gpu alone and offers the CUDA provider calibration runs on."""
    import onnxruntime as ort

    from t2vtrt.runtime.backends.onnxruntime import CUDA, GPU_INSTALL, check_one_package, installed_ort_packages

    check_one_package(installed_ort_packages())
    if CUDA not in ort.get_available_providers():
        raise T2VError(f"onnxruntime {ort.__version__} has no CUDA provider (the CPU package is installed): {GPU_INSTALL}")
    return f"onnxruntime-gpu {ort.__version__}"


def step_detect(state: CheckState) -> str:
    """A GPU exists, a profile matches it, and the CUDA bindings reach it."""
    from t2vtrt.build.gpus.detect import detect_gpu, match_profile
    from t2vtrt.runtime.backends.tensorrt import cuda_api

    gpu = detect_gpu()
    if gpu is None:
        raise T2VError("no NVIDIA GPU found (NVML and nvidia-smi see none, or CUDA_VISIBLE_DEVICES hides them): gpu-check needs one")
    state.profile = match_profile(gpu).name
    cuda = cuda_api()
    return f"{gpu.name} ({gpu.sm}, {gpu.vram_gb:.1f} GiB) -> profile {state.profile}; CUDA sees sm {cuda.capability()}"


def step_export(state: CheckState) -> str:
    """Export and patch the model (the cpu stages)."""
    from t2vtrt.build.artifacts import ArtifactPaths
    from t2vtrt.build.export import run_export
    from t2vtrt.build.surgery.stage import run_surgery_stage

    info = run_export(state.model, state.artifacts)
    run_surgery_stage(ArtifactPaths(state.artifacts / info["model"]["name"]))
    state.model = info["model"]["name"]
    return f"{state.artifacts / state.model / 'onnx'}"


def step_int8(state: CheckState) -> str:
    """Calibrate and quantize the denoiser on CUDA: denoiser.int8.onnx (Q/DQ + FP16), the graph TensorRT builds INT8 from."""
    import json
    import os

    from t2vtrt.build.artifacts import ArtifactPaths
    from t2vtrt.build.provenance import quantize_inputs, record_quantized
    from t2vtrt.calibration.paths import CalibPaths
    from t2vtrt.calibration.stage import run_calibrate, run_quantize
    from t2vtrt.runtime.backends.onnxruntime import DEVICE_ENV

    # cuda unless the caller chose: under auto a CUDA provider that does not start would pass here on the CPU.
    os.environ.setdefault(DEVICE_ENV, "cuda")
    paths = ArtifactPaths(state.artifacts / state.model)
    run_calibrate(paths)
    made_from = quantize_inputs(paths)
    run_quantize(paths)
    record_quantized(paths, made_from)
    ran_on = json.loads(CalibPaths(paths).plan.read_text()).get("onnxruntime", {}).get("devices", [])
    return f"{paths.onnx('denoiser', 'int8')} (calibrated on {'+'.join(ran_on) or '?'})"


def step_build(state: CheckState) -> str:
    """Build the engines for the detected profile (FP16/BF16 graphs and the INT8 denoiser included)."""
    from t2vtrt.build.artifacts import ArtifactPaths
    from t2vtrt.build.engines.tensorrt import build_gpu_target

    manifest = build_gpu_target(ArtifactPaths(state.artifacts / state.model), state.profile, quiet=True)
    state.engines = manifest.parent
    return f"{state.engines}"


def engine_rows(state: CheckState) -> list[Row]:
    """One row per built engine (precision, size); a failing row when the profile runs INT8 but no INT8 denoiser was built."""
    from t2vtrt.build.gpus.profiles import load_profile
    from t2vtrt.runtime.manifest import load_manifest

    assert state.engines is not None
    components = load_manifest(state.engines).data["components"]
    rows: list[Row] = []
    for name, component in components.items():
        for precision, variant in component["variants"].items():
            size = (state.engines / variant["file"]).stat().st_size
            rows.append((f"build {name} {precision}", True, f"{variant['file']} {size / 2**20:.1f} MiB", None))
    component, precision = INT8_DENOISER
    if "int8" in load_profile(state.profile).precisions and precision not in components[component]["variants"]:
        rows.append(
            (
                f"build {component} {precision}",
                False,
                "no INT8 Q/DQ+FP16 denoiser engine was built: check the calibrate + quantize row and onnx/denoiser.int8.onnx",
                None,
            )
        )
    return rows


def compare_steps(state: CheckState) -> list[Step]:
    """One step per engine: its outputs against the FP32 ONNX graph on ONNX Runtime."""
    from t2vtrt.runtime.manifest import load_manifest

    assert state.engines is not None
    components = load_manifest(state.engines).data["components"]
    return [
        (f"compare {name} {precision}", _comparer(name, precision, component))
        for name, component in components.items()
        for precision in component["variants"]
    ]


def _comparer(name: str, precision: str, component: dict[str, Any]) -> Callable[[CheckState], str]:
    """The step comparing one engine."""
    return lambda state: compare_engine(state, name, precision, component)


def compare_engine(state: CheckState, name: str, precision: str, component: dict[str, Any]) -> str:
    """One engine through polygraphy's TrtRunner vs the FP32 graph's outputs; the figures, or a T2VError with them."""
    from polygraphy.backend.trt import EngineFromBytes, TrtRunner

    assert state.engines is not None
    feeds = sample_feeds(component)
    reference = reference_outputs(state, name, component, feeds)
    engine = EngineFromBytes((state.engines / component["variants"][precision]["file"]).read_bytes())
    with TrtRunner(engine) as runner:
        actual = runner.infer(feeds)
    tolerance = load_tolerances()[precision]
    figures, ok = [], True
    for output in component["outputs"]:
        metrics = compare_metrics(np.asarray(actual[output["name"]]), reference[output["name"]])
        ok &= within(metrics, tolerance)
        figures.append(f"{output['name']}: " + ", ".join(f"{k} {v:.3g}" for k, v in metrics.items()))
    detail = "; ".join(figures) + f" (max_rel_l2 {tolerance['max_rel_l2']:g}, min_cosine {tolerance['min_cosine']:g})"
    if not ok:
        raise T2VError(f"outside the {precision} tolerance: {detail}")
    return detail


def reference_outputs(state: CheckState, name: str, component: dict[str, Any], feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The FP32 ONNX graph's outputs on ONNX Runtime's CPU provider, once per component."""
    if name not in state.references:
        from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx

        graph = state.artifacts / state.model / "onnx" / f"{name}.opt.onnx"
        with OnnxrtRunner(SessionFromOnnx(str(graph), providers=["cpu"])) as runner:
            state.references[name] = {k: np.asarray(v) for k, v in runner.infer(feeds).items()}
    return state.references[name]


def step_generate(state: CheckState) -> str:
    """A video through the runtime's TensorRT backend; --low-vram must give the same frames."""
    from t2vtrt.runtime.pipeline import Pipeline
    from t2vtrt.runtime.video import write_video

    assert state.engines is not None
    videos = []
    for low_vram in (False, True):
        pipe = Pipeline.from_dir(state.engines, low_vram=low_vram)
        videos.append(pipe("a red balloon rising over a lake", seed=0))
        pipe.close()
    if not np.array_equal(videos[0], videos[1]):
        diff = int(np.abs(videos[0].astype(int) - videos[1].astype(int)).max())
        raise T2VError(f"--low-vram frames differ from resident frames (max diff {diff})")
    path = write_video(videos[0], state.artifacts / state.model / "reports" / "gpu_check.mp4")
    return f"{path} {videos[0].shape}"


STEPS: list[Step] = [
    ("install", step_install),
    ("detect", step_detect),
    ("export + surgery", step_export),
    ("calibrate + quantize (INT8 Q/DQ)", step_int8),
    ("build engines", step_build),
]


def run_steps(state: CheckState, echo: Echo, steps: list[Step]) -> bool:
    """Run steps in order, a row each; False at the first failure (the rest do not run)."""
    for name, step in steps:
        start = time.perf_counter()
        try:
            detail, ok = step(state), True
        except Exception as exc:  # noqa: BLE001 - every failure becomes one FAIL row
            detail, ok = _one_line(exc), False
        if not add_row(state, echo, (name, ok, detail, time.perf_counter() - start)):
            return False
    return True


def add_row(state: CheckState, echo: Echo, row: Row) -> bool:
    """Print and record one table row; its result."""
    name, ok, detail, seconds = row
    state.rows.append(row)
    echo(f"{name:<34} {'PASS' if ok else 'FAIL':<6} {'' if seconds is None else f'{seconds:.1f}':>8}  {detail}")
    return ok


def run_gpu_check(artifacts: Path, model: str = "tiny", echo: Echo = print) -> bool:
    """Every step as one table, stopping at the first failure; True when all passed."""
    state = CheckState(artifacts, model)
    echo(HEADER)
    passed = (
        run_steps(state, echo, STEPS)
        and all(add_row(state, echo, row) for row in engine_rows(state))
        and run_steps(state, echo, compare_steps(state))
        and run_steps(state, echo, [("generate", step_generate)])
    )
    failed = next((name for name, ok, _, _ in state.rows if not ok), None)
    total = sum(seconds or 0.0 for *_, seconds in state.rows)
    echo(f"gpu-check: PASS ({len(state.rows)} steps, {total:.0f} s)" if passed else f"gpu-check: FAIL at step '{failed}' ({total:.0f} s)")
    return passed


def _one_line(exc: BaseException) -> str:
    """An exception as one line: its type and first message line."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
