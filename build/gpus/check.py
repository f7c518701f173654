"""`t2vtrt gpu-check` / `make gpu-check`: prove the TensorRT path on this machine's GPU in one command.

Steps, each printed PASS/FAIL: detect the GPU and its profile, import TensorRT and the CUDA
bindings, export + patch the tiny model, build its engines, compare every engine with the
FP32 ONNX graph on ONNX Runtime through polygraphy (tolerances from _tolerances.toml), and
generate a video with the runtime (resident and --low-vram, which must agree).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from t2vtrt.runtime.errors import T2VError

TOLERANCES = Path(__file__).parent / "_tolerances.toml"
Echo = Callable[[str], None]


@dataclass
class CheckState:
    """What earlier steps found, for the later ones."""

    artifacts: Path
    model: str
    profile: str = ""
    engines: Path | None = None
    results: list[tuple[str, bool, str]] = field(default_factory=list)


def load_tolerances(path: Path = TOLERANCES) -> dict[str, dict[str, float]]:
    """Per precision: max_rel_l2 and min_cosine."""
    from t2vtrt.build.gpus.profiles import read_toml

    return read_toml(path)


def compare_metrics(actual: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Relative L2, max abs difference and cosine similarity (float64)."""
    a, r = actual.astype(np.float64).ravel(), reference.astype(np.float64).ravel()
    norm = np.linalg.norm(r)
    cosine = float(a @ r / (np.linalg.norm(a) * norm)) if norm and np.linalg.norm(a) else float(np.array_equal(a, r))
    return {"rel_l2": float(np.linalg.norm(a - r) / norm) if norm else float(np.linalg.norm(a)),
            "max_abs": float(np.abs(a - r).max()) if a.size else 0.0, "cosine": cosine}


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


def step_detect(state: CheckState) -> str:
    """A GPU exists and a profile matches it."""
    from t2vtrt.build.gpus.detect import detect_gpu, match_profile

    gpu = detect_gpu()
    if gpu is None:
        raise T2VError("no NVIDIA GPU found (NVML and nvidia-smi see none): gpu-check needs one")
    state.profile = match_profile(gpu).name
    return f"{gpu.name} ({gpu.sm}, {gpu.vram_gb:.1f} GiB) -> profile {state.profile}"


def step_tensorrt(state: CheckState) -> str:
    """tensorrt and CUDA bindings import."""
    from t2vtrt.build.engines.tensorrt import import_tensorrt
    from t2vtrt.runtime.backends.tensorrt import cuda_api

    trt = import_tensorrt()
    cuda = cuda_api()
    return f"TensorRT {trt.__version__}, CUDA bindings {type(cuda).__name__}, device capability {cuda.capability()}"


def step_export(state: CheckState) -> str:
    """Export and patch the model (the cpu stages)."""
    from t2vtrt.build.artifacts import ArtifactPaths
    from t2vtrt.build.export import run_export
    from t2vtrt.build.surgery.stage import run_surgery_stage

    info = run_export(state.model, state.artifacts)
    run_surgery_stage(ArtifactPaths(state.artifacts / info["model"]["name"]))
    state.model = info["model"]["name"]
    return f"{state.artifacts / state.model / 'onnx'}"


def step_build(state: CheckState) -> str:
    """Build the engines for the detected profile."""
    from t2vtrt.build.artifacts import ArtifactPaths
    from t2vtrt.build.engines.tensorrt import build_gpu_target

    manifest = build_gpu_target(ArtifactPaths(state.artifacts / state.model), state.profile, quiet=True)
    state.engines = manifest.parent
    return ", ".join(sorted(p.name for p in state.engines.glob("*.plan")))


def compare_engines(state: CheckState, echo: Echo) -> bool:
    """Every engine against its FP32 ONNX graph on ONNX Runtime, through polygraphy's runners."""
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx
    from polygraphy.backend.trt import EngineFromBytes, TrtRunner
    from polygraphy.comparator import Comparator

    from t2vtrt.runtime.manifest import load_manifest

    assert state.engines is not None
    manifest = load_manifest(state.engines)
    tolerances = load_tolerances()
    onnx_dir = state.artifacts / state.model / "onnx"
    ok = True
    for name, component in manifest.data["components"].items():
        feeds = sample_feeds(component)
        for precision, variant in component["variants"].items():
            engine = EngineFromBytes((state.engines / variant["file"]).read_bytes())
            runners = [TrtRunner(engine), OnnxrtRunner(SessionFromOnnx(str(onnx_dir / f"{name}.opt.onnx")))]
            results = Comparator.run(runners, data_loader=[feeds])
            trt_out, ort_out = results[0][1][0], results[1][1][0]
            for output in component["outputs"]:
                metrics = compare_metrics(np.asarray(trt_out[output["name"]]), np.asarray(ort_out[output["name"]]))
                passed = within(metrics, tolerances[precision])
                ok &= passed
                report(state, echo, f"compare {name} {precision} {output['name']}", passed,
                       ", ".join(f"{k} {v:.3g}" for k, v in metrics.items()) + f" (tolerance {tolerances[precision]})")
    return ok


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


def report(state: CheckState, echo: Echo, name: str, ok: bool, detail: str) -> None:
    """Print and record one step."""
    state.results.append((name, ok, detail))
    echo(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}")


def run_gpu_check(artifacts: Path, model: str = "tiny", echo: Echo = print) -> bool:
    """Run every step, stopping at the first that later steps depend on; True when all passed."""
    state = CheckState(artifacts, model)
    steps = [("detect GPU", step_detect), ("TensorRT + CUDA bindings", step_tensorrt), ("export + surgery", step_export),
             ("build engines", step_build)]
    for name, step in steps:
        try:
            report(state, echo, name, True, step(state))
        except Exception as exc:  # noqa: BLE001 - every failure becomes one FAIL line
            report(state, echo, name, False, _one_line(exc))
            return False
    try:
        compared = compare_engines(state, echo)
    except Exception as exc:  # noqa: BLE001
        report(state, echo, "compare engines", False, _one_line(exc))
        compared = False
    try:
        report(state, echo, "generate video", True, step_generate(state))
        generated = True
    except Exception as exc:  # noqa: BLE001
        report(state, echo, "generate video", False, _one_line(exc))
        generated = False
    passed = compared and generated
    echo(f"gpu-check: {'PASS' if passed else 'FAIL'} ({sum(ok for _, ok, _ in state.results)}/{len(state.results)} steps)")
    return passed


def _one_line(exc: BaseException) -> str:
    """An exception as one line: its type and first message line."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
