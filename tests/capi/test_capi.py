"""The C ABI (include/t2vtrt.h, libt2vtrt) from compiled hosts, against the Python Pipeline byte for byte."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from t2vtrt.runtime import embed
from t2vtrt.runtime.pipeline import Pipeline

REPO = Path(__file__).resolve().parents[2]
DEFAULT_BUILD = REPO / "artifacts" / "shapes" / "engines" / "cpu"


def run(
    cmd: list[str], timeout: float = 300, env: dict[str, str] | None = None, cwd: Path | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run a command; a failure fails the test with the command and the tail of its output."""
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def require_toolchain() -> None:
    """Fail (never skip) when what `make capi` needs is missing: these tests are part of `make test`."""
    for tool, fix in (
        ("cmake", "apt-get install cmake (3.20+)"),
        ("c++", "apt-get install g++"),
        ("cc", "apt-get install gcc"),
        ("make", "apt-get install make"),
    ):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} not found: the C ABI tests compile libt2vtrt and C/C++ hosts; {fix}")
    import sysconfig

    libdir, ldlib = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("LDLIBRARY")
    if not ldlib or not (Path(libdir) / ldlib).exists() or not ldlib.endswith(".so"):
        pytest.fail(f"no shared libpython at {libdir}/{ldlib}: the C ABI embeds CPython; use a Python built with --enable-shared")


def build_capi(build_dir: Path, *cmake_args: str) -> Path:
    """`make capi` into build_dir (STAMP= : the running venv is the environment; never pip-install from a test)."""
    require_toolchain()
    args = " ".join(["-DT2VTRT_TEST_HOSTS=ON", *cmake_args])
    run(
        [
            "make",
            "--no-print-directory",
            "-C",
            str(REPO),
            "capi",
            "STAMP=",
            f"CAPI_BUILD={build_dir}",
            f"CAPI_ARGS={args}",
            f"BIN={Path(sys.executable).parent}",
        ],
        timeout=600,
    )
    return build_dir


@pytest.fixture(scope="session")
def capi_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """libt2vtrt.so, the examples and the test hosts (Release)."""
    return build_capi(tmp_path_factory.mktemp("build-capi"))


@pytest.fixture(scope="session")
def host_env() -> dict[str, str]:
    """The environment hosts run in: this venv as the embedded runtime's environment."""
    env = dict(os.environ)
    env["T2VTRT_PYTHON_ENV"] = sys.prefix
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


# The status every bad input must get through the ABI (abi_checks.c prints one CHECK line per case).
EXPECTED = {
    "open_null_out": "T2V_INVALID_ARGUMENT",
    "open_null_dir": "T2V_INVALID_ARGUMENT",
    "open_empty_dir": "T2V_INVALID_ARGUMENT",
    "options_init_null": "T2V_INVALID_ARGUMENT",
    "params_init_null": "T2V_INVALID_ARGUMENT",
    "open_options_garbage": "T2V_INVALID_ARGUMENT",
    "open_threads_negative": "T2V_OUT_OF_RANGE",
    "close_null": "T2V_INVALID_ARGUMENT",
    "close_garbage": "T2V_INVALID_ARGUMENT",
    "video_free_null": "T2V_INVALID_ARGUMENT",
    "video_free_garbage": "T2V_INVALID_ARGUMENT",
    "video_free_zeroed": "T2V_OK",
    "open_missing_dir": "T2V_NOT_FOUND",
    "open_corrupt_manifest": "T2V_CORRUPT_ARTIFACT",
    "open_unknown_precision": "T2V_INVALID_ARGUMENT",
    "open_empty_precision": "T2V_INVALID_ARGUMENT",
    "open_ok": "T2V_OK",
    "generate_null_pipeline": "T2V_INVALID_ARGUMENT",
    "generate_garbage_pipeline": "T2V_INVALID_ARGUMENT",
    "generate_null_params": "T2V_INVALID_ARGUMENT",
    "generate_null_out": "T2V_INVALID_ARGUMENT",
    "generate_params_garbage": "T2V_INVALID_ARGUMENT",
    "generate_params_uninitialised": "T2V_INVALID_ARGUMENT",
    "empty_prompt": "T2V_INVALID_ARGUMENT",
    "blank_prompt": "T2V_INVALID_ARGUMENT",
    "null_prompt": "T2V_INVALID_ARGUMENT",
    "invalid_utf8_prompt": "T2V_INVALID_ARGUMENT",
    "invalid_utf8_negative": "T2V_INVALID_ARGUMENT",
    "steps_zero": "T2V_OUT_OF_RANGE",
    "steps_negative": "T2V_OUT_OF_RANGE",
    "steps_too_many": "T2V_OUT_OF_RANGE",
    "frames_above_range": "T2V_OUT_OF_RANGE",
    "frames_zero": "T2V_OUT_OF_RANGE",
    "height_above_range": "T2V_OUT_OF_RANGE",
    "width_below_range": "T2V_OUT_OF_RANGE",
    "width_not_multiple": "T2V_OUT_OF_RANGE",
    "sampler_unknown": "T2V_INVALID_ARGUMENT",
    "sampler_empty": "T2V_INVALID_ARGUMENT",
    "guidance_infinite": "T2V_OUT_OF_RANGE",
    "seed_negative": "T2V_OUT_OF_RANGE",
    "fps_zero": "T2V_OUT_OF_RANGE",
    "reference_ok": "T2V_OK",
    "cancelled": "T2V_CANCELLED",
    "video_free_after_cancel": "T2V_OK",
    "after_cancel_ok": "T2V_OK",
    "video_free_ok": "T2V_OK",
    "video_free_twice": "T2V_OK",
    "video_free_stale_copy": "T2V_INVALID_ARGUMENT",
    "close_ok": "T2V_OK",
    "close_twice": "T2V_INVALID_ARGUMENT",
    "generate_closed": "T2V_INVALID_ARGUMENT",
}
# A word each message must contain: it names the problem (and the manifest's fix where there is one).
MUST_NAME = {
    "open_missing_dir": "does not exist",
    "open_corrupt_manifest": "not valid JSON",
    "open_unknown_precision": "fp8-magic",
    "empty_prompt": "prompt is empty",
    "null_prompt": "prompt is empty",
    "invalid_utf8_prompt": "UTF-8",
    "steps_zero": "steps",
    "frames_above_range": "frames=999",
    "height_above_range": "height=4096",
    "width_below_range": "width=8",
    "sampler_unknown": "euler-magic",
    "generate_params_uninitialised": "t2v_generate_params_init",
    "cancelled": "cancelled",
    "seed_negative": "seed",
    "guidance_infinite": "guidance",
    "close_twice": "not an open handle",
}


def _host_lines(stdout: str) -> dict[str, tuple[str, str]]:
    """CHECK lines as {name: (status, message)}."""
    checks = {}
    for line in stdout.splitlines():
        if line.startswith("CHECK "):
            _, name, status, *message = line.split(" ", 3)
            checks[name] = (status, message[0] if message else "")
    return checks


def _corrupt_copy(src: Path, dst: Path) -> Path:
    """A copy of a target whose manifest.json is cut off mid-file."""
    shutil.copytree(src, dst)
    text = (dst / "manifest.json").read_text()
    (dst / "manifest.json").write_text(text[: len(text) // 2])
    return dst


def _python_frames(pipe: Pipeline, **kwargs: object) -> bytes:
    """The Python Pipeline's frames for the same arguments, as bytes."""
    frames = pipe(**kwargs)
    assert frames.dtype == np.uint8 and frames.ndim == 4 and frames.shape[-1] == 3
    return frames.tobytes()


def test_header_matches_embed_status_codes() -> None:
    """t2v_status in the header and embed.Status agree value by value, and so do the ABI versions."""
    header = (REPO / "include" / "t2vtrt.h").read_text()
    codes = {name: int(value) for name, value in re.findall(r"T2V_([A-Z_]+) = (\d+)", header)}
    assert codes == {status.name: int(status) for status in embed.Status}
    assert int(re.search(r"#define T2V_ABI_VERSION (\d+)", header).group(1)) == embed.ABI_VERSION


def test_library_exports_only_the_api(capi_build: Path) -> None:
    """Symbol visibility: the dynamic symbol table holds t2v_* and nothing else of ours."""
    out = run(["nm", "-D", "--defined-only", str(capi_build / "libt2vtrt.so")]).stdout
    names = [line.split()[-1] for line in out.splitlines() if line.strip()]
    assert names and all(name.startswith("t2v_") for name in names), names
    assert {"t2v_abi_version", "t2v_pipeline_open", "t2v_generate", "t2v_video_free", "t2v_last_error"} <= set(names)


@pytest.fixture(scope="module")
def abi_checks(
    capi_build: Path, tiny_engines: Path, tmp_path_factory: pytest.TempPathFactory, host_env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """abi_checks.c run once on the tiny target (and a corrupted copy), with 3 open/close loops."""
    corrupt = _corrupt_copy(tiny_engines, tmp_path_factory.mktemp("corrupt") / "cpu")
    return run([str(capi_build / "t2v_abi_checks"), str(tiny_engines), str(corrupt), "3"], env=host_env, timeout=300)


def test_bad_inputs_and_null_arguments_get_their_status(abi_checks: subprocess.CompletedProcess[str]) -> None:
    """Every bad input / NULL / garbage argument: its status and a one-line message naming the problem; no crash."""
    checks = _host_lines(abi_checks.stdout)
    assert {name: status for name, (status, _) in checks.items()} == EXPECTED
    for name, (status, message) in checks.items():
        if status != "T2V_OK":
            assert message.strip(), f"{name}: {status} without a message"
    for name, word in MUST_NAME.items():
        assert word in checks[name][1], (name, checks[name][1])
    assert "OUT_RESET 1" in abi_checks.stdout  # a failed open sets *out to NULL
    assert "CLEARED 1" in abi_checks.stdout  # a successful call clears the thread's error
    assert "LOOP ok 3" in abi_checks.stdout


def test_cancel_is_prompt_and_leaves_the_pipeline_usable(abi_checks: subprocess.CompletedProcess[str]) -> None:
    """Cancel at step 2 of 10: T2V_CANCELLED after exactly 2 callbacks, no video, and the next call equals the reference."""
    cancel = dict(kv.split("=") for kv in re.search(r"^CANCEL (.*)$", abi_checks.stdout, re.M).group(1).split())
    assert cancel["calls"] == "2" and cancel["reference_calls"] == "10" and cancel["data_null"] == "1"
    assert float(cancel["return_ms"]) < 1000  # returns right after the callback, not after the remaining 8 steps
    assert re.search(r"^REUSE identical=1 size=[1-9]", abi_checks.stdout, re.M)


def test_error_line_is_the_clis(abi_checks: subprocess.CompletedProcess[str], tiny_engines: Path, tmp_path: Path) -> None:
    """t2v_last_error() is the line the CLI prints after `error: `."""
    checks = _host_lines(abi_checks.stdout)
    t2v = Path(sys.executable).parent / "t2vtrt"
    cli = run([str(t2v), "generate", "", "--engines", str(tiny_engines), "-o", str(tmp_path / "x.mp4")], check=False)
    assert cli.returncode == 2
    assert cli.stderr.strip() == f"error: {checks['empty_prompt'][1]}"
    cli = run([str(t2v), "generate", "a red circle", "--engines", str(tiny_engines), "--steps", "0", "-o", str(tmp_path / "x.mp4")], check=False)
    assert cli.stderr.strip() == f"error: {checks['steps_zero'][1]}"


def test_c_host_frames_equal_python_tiny(capi_build: Path, tiny_engines: Path, tmp_path: Path, host_env: dict[str, str]) -> None:
    """examples/c/generate.c: the same bytes as Pipeline(...) for every sampler of the tiny model."""
    manifest = json.loads((tiny_engines / "manifest.json").read_text())
    pipe = Pipeline.from_dir(tiny_engines)
    for index, sampler in enumerate(manifest["scheduler"]["samplers"]):
        out = tmp_path / f"{sampler}.rgb"
        args = ["--steps", "3", "--seed", str(11 + index), "--sampler", sampler, "--guidance", "5.0", "--negative", "blurry"]
        proc = run([str(capi_build / "t2v_generate_example"), str(tiny_engines), "a small green ball", str(out), *args], env=host_env)
        expected = _python_frames(
            pipe, prompt="a small green ball", negative_prompt="blurry", steps=3, seed=11 + index, sampler=sampler, guidance=5.0
        )
        assert out.read_bytes() == expected, f"sampler {sampler}: C host and Python differ"
        frames, height, width = (int(v) for v in proc.stdout.split()[:3])
        assert frames * height * width * 3 == len(expected)


def _requests(path: Path, rows: list[tuple[int, int, str, str]]) -> Path:
    """The service example's request file."""
    path.write_text("".join(f"{seed}\t{steps}\t{sampler}\t{prompt}\n" for seed, steps, sampler, prompt in rows))
    return path


def test_default_build_each_sampler_and_precision_equals_python(capi_build: Path, tmp_path: Path, host_env: dict[str, str]) -> None:
    """The default model's build (artifacts/shapes/engines/cpu): C frames == Python frames per sampler x precision."""
    if not (DEFAULT_BUILD / "manifest.json").is_file():
        pytest.skip(f"the default build {DEFAULT_BUILD} is missing: run `make engines` first (the tiny-model tests still ran)")
    manifest = json.loads((DEFAULT_BUILD / "manifest.json").read_text())
    samplers = manifest["scheduler"]["samplers"]
    precisions = sorted({p for c in manifest["components"].values() for p in c["variants"]})
    rows = [(3 + i, 4, sampler, "a red circle moving left on a dark background") for i, sampler in enumerate(samplers)]
    requests = _requests(tmp_path / "requests.tsv", rows)
    for precision in precisions:
        out = tmp_path / precision
        out.mkdir()
        run([str(capi_build / "t2v_service_example"), str(DEFAULT_BUILD), str(requests), str(out), "1", precision], env=host_env)
        pipe = Pipeline.from_dir(DEFAULT_BUILD, precision=precision)
        for i, (seed, steps, sampler, prompt) in enumerate(rows):
            expected = _python_frames(pipe, prompt=prompt, steps=steps, seed=seed, sampler=sampler)
            assert (out / f"{i}.rgb").read_bytes() == expected, f"{precision} {sampler}: C host and Python differ"
        pipe.close()


def test_concurrent_requests_equal_serial(capi_build: Path, tiny_engines: Path, tmp_path: Path, host_env: dict[str, str]) -> None:
    """examples/cpp/service.cpp: 8 threads x 2 requests on one pipeline give the serial Python bytes."""
    samplers = json.loads((tiny_engines / "manifest.json").read_text())["scheduler"]["samplers"]
    rows = [(100 + i, 2 + i % 3, samplers[i % len(samplers)], f"request {i}: a shape moving") for i in range(16)]
    requests = _requests(tmp_path / "requests.tsv", rows)
    proc = run([str(capi_build / "t2v_service_example"), str(tiny_engines), str(requests), str(tmp_path), "8"], env=host_env)
    assert "served 16" in proc.stdout and proc.stdout.count(" T2V_OK ") == 16
    pipe = Pipeline.from_dir(tiny_engines)
    for i, (seed, steps, sampler, prompt) in enumerate(rows):
        assert (tmp_path / f"{i}.rgb").read_bytes() == _python_frames(pipe, prompt=prompt, steps=steps, seed=seed, sampler=sampler), i


def test_missing_python_environment_names_what_it_looked_for(capi_build: Path, tiny_engines: Path, tmp_path: Path, host_env: dict[str, str]) -> None:
    """A wrong $T2VTRT_PYTHON_ENV: T2V_RUNTIME_UNAVAILABLE and one line naming the path and the fix."""
    env = dict(host_env, T2VTRT_PYTHON_ENV="/nonexistent/venv")
    proc = run([str(capi_build / "t2v_generate_example"), str(tiny_engines), "a", str(tmp_path / "x.rgb")], env=env, check=False)
    assert proc.returncode == 2
    line = proc.stderr.strip()
    assert "\n" not in line and line.startswith("T2V_RUNTIME_UNAVAILABLE: ")
    assert "$T2VTRT_PYTHON_ENV /nonexistent/venv (no bin/python3)" in line and "set T2VTRT_PYTHON_ENV" in line


def test_cmake_package_and_cpp_wrapper(capi_build: Path, tiny_engines: Path, tmp_path: Path, host_env: dict[str, str]) -> None:
    """cmake --install, then a separate project: find_package(t2vtrt), t2vtrt::t2vtrt, the C++ wrapper end to end."""
    prefix = tmp_path / "prefix"
    run(["cmake", "--install", str(capi_build), "--prefix", str(prefix)])
    assert (prefix / "include" / "t2vtrt.h").is_file() and (prefix / "include" / "t2vtrt.hpp").is_file()
    assert (prefix / "lib" / "cmake" / "t2vtrt" / "t2vtrtConfig.cmake").is_file()
    build = tmp_path / "consumer"
    run(["cmake", "-S", str(REPO / "tests" / "capi" / "consumer"), "-B", str(build), f"-DCMAKE_PREFIX_PATH={prefix}"])
    run(["cmake", "--build", str(build)])
    out = tmp_path / "video.rgb"
    proc = run([str(build / "consumer"), str(tiny_engines), str(out)], env=host_env)
    assert "cancelled T2V_CANCELLED 2" in proc.stdout
    assert "error T2V_OUT_OF_RANGE" in proc.stdout
    pipe = Pipeline.from_dir(tiny_engines)
    assert out.read_bytes() == _python_frames(pipe, prompt="a red circle moving left", steps=3, seed=7, sampler="dpm++")


@pytest.mark.slow
def test_asan_lsan_build_is_clean(tiny_engines: Path, tmp_path_factory: pytest.TempPathFactory, host_env: dict[str, str]) -> None:
    """AddressSanitizer + LeakSanitizer build of the library and abi_checks: no error, leaks only those capi/lsan.supp justifies."""
    build = build_capi(tmp_path_factory.mktemp("build-capi-asan"), "-DT2VTRT_SANITIZE=ON", "-DT2VTRT_EXAMPLES=OFF", "-DCMAKE_BUILD_TYPE=Debug")
    corrupt = _corrupt_copy(tiny_engines, tmp_path_factory.mktemp("asan-corrupt") / "cpu")
    env = dict(
        host_env,
        ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:exitcode=23",
        LSAN_OPTIONS=f"suppressions={REPO / 'capi' / 'lsan.supp'}:print_suppressions=0",
        PYTHONMALLOC="malloc",
    )
    proc = run([str(build / "t2v_abi_checks"), str(tiny_engines), str(corrupt), "5"], env=env, check=False, timeout=600)
    assert "ERROR: AddressSanitizer" not in proc.stderr, proc.stderr[-4000:]
    assert "ERROR: LeakSanitizer" not in proc.stderr, proc.stderr[-4000:]
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "LOOP ok 5" in proc.stdout
