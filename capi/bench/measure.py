"""Measure the C ABI's cost: overhead per generation vs Pipeline in the same process, throughput of concurrent requests,
and the memory of the embedded interpreter. Prints a markdown report (docs/embedding.md quotes it).

    make capi && .venv/bin/python capi/bench/measure.py [--build build-capi] [--engines artifacts/shapes/engines/cpu]
"""

from __future__ import annotations

import argparse
import ctypes
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from t2vtrt.runtime.pipeline import Pipeline

PROMPT = b"a red circle moving left on a dark background"


class Timings(ctypes.Structure):
    """t2v_timings."""

    _fields_ = [(n, ctypes.c_double) for n in ("total_s", "loop_s", "text_encoder_s", "denoiser_s", "vae_decoder_s", "call_s")]


class Video(ctypes.Structure):
    """t2v_video."""

    _fields_ = [
        ("data", ctypes.c_void_p),
        ("size", ctypes.c_size_t),
        ("frames", ctypes.c_int),
        ("height", ctypes.c_int),
        ("width", ctypes.c_int),
        ("channels", ctypes.c_int),
        ("fps", ctypes.c_int),
        ("timings", Timings),
    ]


class Params(ctypes.Structure):
    """t2v_generate_params."""

    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("prompt", ctypes.c_char_p),
        ("negative_prompt", ctypes.c_char_p),
        ("steps", ctypes.c_int),
        ("guidance", ctypes.c_double),
        ("frames", ctypes.c_int),
        ("height", ctypes.c_int),
        ("width", ctypes.c_int),
        ("seed", ctypes.c_int64),
        ("sampler", ctypes.c_char_p),
        ("fps", ctypes.c_int),
        ("progress", ctypes.c_void_p),
        ("progress_user", ctypes.c_void_p),
    ]


def overhead(lib_path: Path, engines: Path, runs: int) -> dict[str, float]:
    """Alternate Pipeline.generate and t2v_generate (ctypes, GIL released) on one process; default arguments."""
    lib = ctypes.CDLL(str(lib_path))
    handle = ctypes.c_void_p()
    assert lib.t2v_pipeline_open(str(engines).encode(), None, ctypes.byref(handle)) == 0, lib.t2v_last_error
    pipe = Pipeline.from_dir(engines)
    params = Params()
    lib.t2v_generate_params_init(ctypes.byref(params))
    params.prompt = PROMPT
    video = Video()
    py_s, c_s, inner = [], [], []
    for _ in range(2):  # warm-up both
        pipe.generate(PROMPT.decode())
        lib.t2v_generate(handle, ctypes.byref(params), ctypes.byref(video))
        lib.t2v_video_free(ctypes.byref(video))
    for _ in range(runs):
        start = time.perf_counter()
        pipe.generate(PROMPT.decode())
        py_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        assert lib.t2v_generate(handle, ctypes.byref(params), ctypes.byref(video)) == 0
        c_s.append(time.perf_counter() - start)
        inner.append(video.timings.call_s - video.timings.total_s)
        lib.t2v_video_free(ctypes.byref(video))
    lib.t2v_pipeline_close(handle)
    py, c = statistics.median(py_s), statistics.median(c_s)
    return {"python_s": py, "abi_s": c, "ratio": c / py, "inner_overhead_ms": statistics.median(inner) * 1e3}


def throughput(build: Path, engines: Path, requests: int) -> list[dict[str, float]]:
    """examples/cpp/service.cpp with 1, 2, 4, 8 workers on the same requests; outputs compared byte for byte."""
    rows, outputs = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        reqs = Path(tmp) / "requests.tsv"
        reqs.write_text("".join(f"{i}\t0\t-\t{PROMPT.decode()} {i}\n" for i in range(requests)))
        for workers in (1, 2, 4, 8):
            out = Path(tmp) / str(workers)
            out.mkdir()
            proc = subprocess.run(
                [str(build / "t2v_service_example"), str(engines), str(reqs), str(out), str(workers)], capture_output=True, text=True, check=True
            )
            summary = proc.stdout.strip().splitlines()[-1].split()
            wall = float(summary[3])
            outputs[workers] = [(out / f"{i}.rgb").read_bytes() for i in range(requests)]
            rows.append({"workers": workers, "wall_s": wall, "req_per_s": requests / wall})
        for row in rows:
            row["identical"] = outputs[row["workers"]] == outputs[1]
    return rows


def max_rss_mb(cmd: list[str]) -> float:
    """Peak RSS of one child process (its own rusage from wait4)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, _, usage = os.wait4(proc.pid, 0)
    proc.returncode = 0
    return usage.ru_maxrss / 1024


def memory(build: Path, engines: Path) -> dict[str, float]:
    """Peak RSS: the C host that only starts the runtime (a missing target), one default generation, and Python's."""
    gen = str(build / "t2v_generate_example")
    runtime_only = max_rss_mb([gen, "/nonexistent", "x", os.devnull])
    c_generate = max_rss_mb([gen, str(engines), PROMPT.decode(), os.devnull])
    py_generate = max_rss_mb(
        [
            sys.executable,
            "-c",
            f"from t2vtrt.runtime.pipeline import Pipeline; import sys; Pipeline.from_dir(sys.argv[1])({PROMPT.decode()!r})",
            str(engines),
        ]
    )
    return {"runtime_only_mb": runtime_only, "c_generate_mb": c_generate, "python_generate_mb": py_generate}


def main() -> None:
    """Run all three and print markdown."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--build", type=Path, default=Path("build-capi"))
    parser.add_argument("--engines", type=Path, default=Path("artifacts/shapes/engines/cpu"))
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--requests", type=int, default=8)
    args = parser.parse_args()
    os.environ.setdefault("T2VTRT_PYTHON_ENV", sys.prefix)
    mem = memory(args.build, args.engines)
    ovh = overhead(args.build / "libt2vtrt.so", args.engines, args.runs)
    rows = throughput(args.build, args.engines, args.requests)
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), platform.processor())
    print(f"host: {cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}; engines {args.engines}; {time.strftime('%Y-%m-%d')}\n")
    print(f"overhead, default generation, median of {args.runs} alternating runs in one process:")
    print(
        f"  Pipeline.generate {ovh['python_s']:.4f} s, t2v_generate via ctypes {ovh['abi_s']:.4f} s, ratio {ovh['ratio']:.4f} "
        f"({(ovh['ratio'] - 1) * 100:+.2f} %); inside the library (call_s - total_s) {ovh['inner_overhead_ms']:.3f} ms\n"
    )
    print(f"| concurrent workers | {args.requests} requests wall s | requests/s | vs serial | bytes equal serial |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['workers']} | {row['wall_s']:.2f} | {row['req_per_s']:.3f} | {row['req_per_s'] / rows[0]['req_per_s']:.2f}x "
            f"| {'yes' if row['identical'] else 'NO'} |"
        )
    print(
        f"\npeak RSS: C host, runtime only (interpreter + runtime imports) {mem['runtime_only_mb']:.0f} MB; C host, one "
        f"default generation {mem['c_generate_mb']:.0f} MB; Python process, same generation {mem['python_generate_mb']:.0f} MB"
    )


if __name__ == "__main__":
    main()
