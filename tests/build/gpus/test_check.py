"""`t2vtrt gpus` and `t2vtrt gpu-check` on a machine without a GPU, and gpu-check's comparison helpers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from t2vtrt.build.gpus import check, detect
from t2vtrt.build.gpus.profiles import PRECISIONS
from t2vtrt.cli import cli


@pytest.fixture()
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Detection finds nothing."""
    monkeypatch.setattr(detect, "_from_nvml", lambda: None)
    monkeypatch.setattr(detect.shutil, "which", lambda name: None)


def test_gpus_lists_profiles(no_gpu: None) -> None:
    """One line per profile plus where they live; no GPU detected."""
    result = CliRunner().invoke(cli, ["gpus"])
    assert result.exit_code == 0, result.output
    assert "rtx3060" in result.output and "sm86" in result.output and "detected: no NVIDIA GPU" in result.output


def test_gpus_resolve(no_gpu: None) -> None:
    """`gpus --resolve auto` is cpu without a GPU (what the Makefile's GPU=auto uses); names pass through."""
    runner = CliRunner()
    assert runner.invoke(cli, ["gpus", "--resolve", "auto"]).output.strip() == "cpu"
    assert runner.invoke(cli, ["gpus", "--resolve", "h100"]).output.strip() == "h100"


def test_gpu_check_without_the_gpu_extra_fails_at_install(no_gpu: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Exit 1: the table's first row is install FAIL with the extra to install; nothing is built."""
    import sys

    monkeypatch.setitem(sys.modules, "tensorrt", None)
    result = CliRunner().invoke(cli, ["gpu-check", "--artifacts", str(tmp_path)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert lines[0].split() == ["step", "result", "seconds", "detail"] and len(lines) == 3
    assert lines[1].startswith("install") and " FAIL " in lines[1]
    assert "T2VError: TensorRT is not installed, so engines cannot be built here: pip install -e '.[build-tools,gpu]'" in lines[1]
    assert lines[2].startswith("gpu-check: FAIL at step 'install'")
    assert list(tmp_path.iterdir()) == []


def _stub_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fail_at: str | None, int8_built: bool = True) -> list[str]:
    """run_gpu_check with every step stubbed (real order, rows and timing); the printed lines."""
    import json

    engines = tmp_path / "engines"
    engines.mkdir(exist_ok=True)
    built = {"text_encoder": ["fp16"], "denoiser": ["fp16", "int8"] if int8_built else ["fp16"]}
    for name, precisions in built.items():
        for p in precisions:
            (engines / f"{name}.{p}.plan").write_bytes(b"x" * (3 << 20))
    components = {n: {"variants": {p: {"file": f"{n}.{p}.plan"} for p in ps}} for n, ps in built.items()}
    monkeypatch.setattr("t2vtrt.runtime.manifest.load_manifest", lambda d: type("M", (), {"data": {"components": components}})())

    def step(name: str, detail: str):  # noqa: ANN202
        def run(state: check.CheckState) -> str:
            if name == fail_at:
                raise check.T2VError(f"{name} broke")
            if name == "build engines":
                state.engines = engines
            state.profile = "rtx3060"
            return detail

        return run

    monkeypatch.setattr(check, "STEPS", [(n, step(n, f"{n} ok")) for n, _ in check.STEPS])
    monkeypatch.setattr(check, "compare_engine", lambda state, name, precision, component: step(f"compare {name} {precision}", "rel_l2 0.01")(state))
    monkeypatch.setattr(check, "step_generate", step("generate", "video.mp4 (1, 8, 64, 64, 3)"))
    lines: list[str] = []
    assert check.run_gpu_check(tmp_path, echo=lines.append) is (fail_at is None and int8_built)
    assert json.dumps(lines)  # plain text rows
    return lines


def test_gpu_check_table_has_every_step_engine_and_comparison(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """One table: install, detect, export, INT8, build, a row per engine with precision and size, a compare per engine, generate."""
    lines = _stub_run(monkeypatch, tmp_path, None)
    steps = [line[:34].strip() for line in lines[1:-1]]
    assert steps == [
        "install",
        "detect",
        "export + surgery",
        "calibrate + quantize (INT8 Q/DQ)",
        "build engines",
        "build text_encoder fp16",
        "build denoiser fp16",
        "build denoiser int8",
        "compare text_encoder fp16",
        "compare denoiser fp16",
        "compare denoiser int8",
        "generate",
    ]
    assert all(" PASS " in line for line in lines[1:-1])
    assert "denoiser.int8.plan 3.0 MiB" in lines[8]
    assert lines[-1].startswith("gpu-check: PASS (12 steps")


@pytest.mark.parametrize("fail_at", ["detect", "build engines", "compare denoiser int8"])
def test_gpu_check_stops_at_the_first_failure_naming_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fail_at: str) -> None:
    """The failing step is the last row, FAIL with its one line; nothing after it runs; the summary names it."""
    lines = _stub_run(monkeypatch, tmp_path, fail_at)
    assert lines[-2].startswith(fail_at) and " FAIL " in lines[-2] and f"T2VError: {fail_at} broke" in lines[-2]
    assert lines[-1].startswith(f"gpu-check: FAIL at step '{fail_at}'")
    assert not any(line.startswith("generate") for line in lines)


def test_gpu_check_fails_when_the_int8_denoiser_was_not_built(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A profile that runs INT8 must get the INT8 Q/DQ+FP16 denoiser engine built (and then compared)."""
    lines = _stub_run(monkeypatch, tmp_path, None, int8_built=False)
    assert lines[-2].startswith("build denoiser int8") and "no INT8 Q/DQ+FP16 denoiser engine was built" in lines[-2]
    assert lines[-1].startswith("gpu-check: FAIL at step 'build denoiser int8'")


@pytest.mark.parametrize(
    ("trt_cuda", "cuda_python", "ok"),
    [(12, 12, True), (13, 13, True), (None, 12, True), (12, None, True), (12, 13, False), (13, 12, False)],
)
def test_tensorrt_and_cuda_python_share_a_cuda_major(trt_cuda: int | None, cuda_python: int | None, ok: bool) -> None:
    """A CUDA 12 TensorRT with cuda-python 13 (pip's pick when unbounded) is refused with both extras and their drivers."""
    if ok:
        check.check_cuda_pairing(trt_cuda, cuda_python)
    else:
        extras = r"'\.\[build-tools,gpu\]' \(CUDA 12, driver r535\+\) or '\.\[build-tools,gpu-cu13\]' \(CUDA 13, driver r580\+\)"
        with pytest.raises(check.T2VError, match=rf"built for CUDA {trt_cuda} but cuda-python {cuda_python}\.x .*" + extras):
            check.check_cuda_pairing(trt_cuda, cuda_python)


def test_gpu_tests_fail_on_a_gpu_machine_without_the_extra() -> None:
    """gpu-marked tests: skip without a GPU; fail (never skip) with a GPU but no gpu extra; run with both."""
    assert check.gpu_test_gate(False, ["tensorrt"])[0] == "skip"
    verdict, reason = check.gpu_test_gate(True, ["tensorrt", "cuda-python"])
    assert verdict == "fail" and "has an NVIDIA GPU but not the gpu extra (tensorrt, cuda-python missing)" in reason
    assert check.gpu_test_gate(True, []) is None
    assert set(check.missing_gpu_extra()) <= {"tensorrt", "cuda-python", "nvidia-ml-py"}


def test_pyproject_pairs_tensorrt_and_cuda_python_majors() -> None:
    """Each GPU extra names a CUDA-versioned TensorRT wheel and the cuda-python major of that CUDA."""
    import tomllib

    root = Path(__file__).resolve().parents[3]
    extras = tomllib.loads((root / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for extra, major in (("gpu", 12), ("gpu-cu13", 13)):
        assert any(r.startswith(f"tensorrt-cu{major}") for r in extras[extra]), extra
        assert f"cuda-python>={major},<{major + 1}" in extras[extra], extra
        assert not any(r.split(">")[0].split("=")[0] == "tensorrt" for r in extras[extra]), "the tensorrt metapackage picks CUDA 13"


def test_install_step_refuses_the_cpu_onnxruntime() -> None:
    """gpu-check's install row fails on an ONNX Runtime without the CUDA provider, naming the GPU install."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        assert check.onnxruntime_with_cuda() == f"onnxruntime-gpu {ort.__version__}"
        return
    with pytest.raises(check.T2VError, match=r"has no CUDA provider \(the CPU package is installed\): pip uninstall -y onnxruntime onnxruntime-gpu"):
        check.onnxruntime_with_cuda()


def _requirements(extras: dict[str, list[str]], chosen: tuple[str, ...]) -> set[str]:
    """The distribution names `pip install '.[chosen]'` asks for, this project's self-references followed."""
    import re

    names: set[str] = set()
    for extra in chosen:
        for requirement in extras[extra]:
            name = re.split(r"[\[<>=~!; ]", requirement, maxsplit=1)[0]
            inner = re.search(r"\[(.*)\]", requirement)
            names |= _requirements(extras, tuple(inner.group(1).split(","))) if name == "t2v-trt" and inner else {name}
    return names


def test_gpu_builds_get_onnxruntime_gpu_and_never_the_cpu_package() -> None:
    """build is build-tools + CPU onnxruntime; build-tools + a GPU extra asks for onnxruntime-gpu alone (one package folder)."""
    import tomllib

    root = Path(__file__).resolve().parents[3]
    extras = tomllib.loads((root / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert _requirements(extras, ("build",)) == _requirements(extras, ("build-tools",)) | {"onnxruntime"}
    assert not {"onnxruntime", "onnxruntime-gpu"} & _requirements(extras, ("build-tools",))
    for gpu in ("gpu", "gpu-cu13"):
        wanted = _requirements(extras, ("build-tools", "dev", gpu))
        assert "onnxruntime-gpu" in wanted and "onnxruntime" not in wanted, gpu
    makefile = (root / "Makefile").read_text()
    assert "-e '.[build-tools,dev,$(GPU_EXTRA)]'" in makefile and "pip uninstall --quiet --yes onnxruntime onnxruntime-gpu" in makefile


@pytest.mark.gpu
def test_gpu_check_passes_on_this_gpu(tmp_path: Path) -> None:
    """The whole gpu-check (INT8 denoiser included) on the real GPU: every row PASS."""
    lines: list[str] = []
    assert check.run_gpu_check(tmp_path, echo=lines.append), "\n".join(lines)
    assert any(line.startswith("compare denoiser int8") for line in lines)


def test_tolerances_cover_every_precision() -> None:
    """Each precision a profile may list has a tolerance, looser as precision drops."""
    tolerances = check.load_tolerances()
    assert set(tolerances) == set(PRECISIONS)
    assert tolerances["fp32"]["max_rel_l2"] < tolerances["fp16"]["max_rel_l2"] < tolerances["int8"]["max_rel_l2"]


def test_compare_metrics_and_within() -> None:
    """Relative L2, max abs and cosine against hand values."""
    reference = np.array([3.0, 4.0], np.float32)
    metrics = check.compare_metrics(np.array([3.0, 4.5], np.float32), reference)
    assert metrics["rel_l2"] == pytest.approx(0.1) and metrics["max_abs"] == pytest.approx(0.5)
    assert metrics["cosine"] == pytest.approx((9 + 18) / (5 * np.hypot(3, 4.5)))
    assert check.within(check.compare_metrics(reference, reference), {"max_rel_l2": 0.0, "min_cosine": 1.0 - 1e-12})
    assert not check.within(metrics, {"max_rel_l2": 0.05, "min_cosine": 0.9})


def test_sample_feeds_follow_the_spec() -> None:
    """Opt shapes, dtypes and value ranges of a manifest component."""
    spec = {
        "axes": {"batch": [1, 2, 4], "seq": [77, 77, 77]},
        "inputs": [
            {"name": "ids", "dtype": "int32", "shape": ["batch", "seq"], "value_range": [0, 9]},
            {"name": "t", "dtype": "float32", "shape": ["batch"], "value_range": [0, 999]},
            {"name": "x", "dtype": "float32", "shape": ["batch", 4]},
        ],
    }
    feeds = check.sample_feeds(spec)
    assert feeds["ids"].shape == (2, 77) and feeds["ids"].dtype == np.int32 and 0 <= feeds["ids"].min() <= feeds["ids"].max() <= 9
    assert feeds["t"].shape == (2,) and (0 <= feeds["t"]).all() and (feeds["t"] <= 999).all()
    assert feeds["x"].shape == (2, 4) and feeds["x"].dtype == np.float32
