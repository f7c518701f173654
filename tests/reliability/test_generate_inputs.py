"""`t2vtrt generate` with the values a hostile or careless user passes: one line each, nothing written, no default."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cli_run import assert_one_line_error, snapshot, t2vtrt

from t2vtrt.runtime.errors import T2VError
from t2vtrt.runtime.pipeline import Pipeline

PROMPT = "a red balloon rising over a lake"
FAST = ("--frames", "2", "--steps", "2")

# (flags, words the one error line must contain). Zero, empty and NaN must never fall back to a default.
BAD_INPUTS = [
    (("--steps", "0"), ("steps must be >= 1", "got 0")),
    (("--steps", "-3"), ("steps must be >= 1",)),
    (("--steps", "1000"), ("steps=1000", "use at most 999")),
    (("--steps", "1000", "--sampler", "dpm++"), ("steps=1000", "dpm++", "use at most")),
    (("--frames", "0"), ("frames=0", "[1, 16]")),
    (("--frames", "-1"), ("frames=-1",)),
    (("--width", "0"), ("width=0", "[32, 128]")),
    (("--height", "0"), ("height=0", "[32, 128]")),
    (("--height", "40"), ("multiples of 16", "64x40 (WxH)", "64x32")),  # a multiple of 8 the UNet cannot take
    (("--width", "72"), ("multiples of 16", "72x64 (WxH)")),
    (("--fps", "0"), ("fps must be", "got 0")),
    (("--fps", "-1"), ("fps must be", "got -1")),
    (("--precision", ""), ("precision ''", "fp32")),
    (("--precision", "fp8"), ("fp8", "fp32")),
    (("--guidance", "nan"), ("guidance=nan", "finite")),
    (("--guidance", "inf"), ("guidance=inf", "finite")),
    (("--guidance", "-inf"), ("guidance=-inf",)),
    (("--seed", "-1"), ("seed must be", "got -1")),
    (("--sampler", "flow-euler"), ("flow-euler", "does not fit", "ddim, dpm++, dpm++karras")),
    (("--sampler", "euler-a"), ("unknown sampler 'euler-a'", "ddim")),
    (("--sampler", ""), ("unknown sampler ''",)),
    (("--negative-prompt", "bad \udcff byte"), ("negative prompt is not valid UTF-8",)),
]


@pytest.fixture(scope="module")
def engines_before(tiny_engines: Path) -> dict[str, str]:
    """The target's bytes before any bad call (compared after each)."""
    return snapshot(tiny_engines)


@pytest.mark.parametrize(("flags", "words"), BAD_INPUTS, ids=[" ".join(f) or "empty" for f, _ in BAD_INPUTS])
def test_bad_value_is_one_line_and_writes_nothing(
    tiny_engines: Path, engines_before: dict[str, str], tmp_path: Path, flags: tuple[str, ...], words: tuple[str, ...]
) -> None:
    """Exit 2, one line naming the value and the fix; no output file; the engines unchanged."""
    out = tmp_path / "x.mp4"
    args = dict(zip(FAST[::2], FAST[1::2]))
    args.update(dict(zip(flags[::2], flags[1::2])))  # the case's value wins over the fast defaults
    flat = [item for pair in args.items() for item in pair]
    result = t2vtrt("generate", PROMPT, "--engines", str(tiny_engines), "-o", str(out), *flat)
    assert_one_line_error(result, *words)
    assert list(tmp_path.iterdir()) == []
    assert snapshot(tiny_engines) == engines_before


def test_prompt_that_is_not_utf8(tiny_engines: Path, tmp_path: Path) -> None:
    """Undecodable bytes in argv (a terminal in another locale): one line, not a UnicodeEncodeError traceback."""
    exe = Path(sys.executable).with_name("t2vtrt")
    out = tmp_path / "x.mp4"
    argv = [
        os.fsencode(str(exe)),
        b"--quiet",
        b"generate",
        b"a \xff\xfe balloon",
        b"--engines",
        os.fsencode(str(tiny_engines)),
        b"-o",
        os.fsencode(str(out)),
        *(a.encode() for a in FAST),
    ]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert_one_line_error(result, "prompt is not valid UTF-8")
    assert not out.exists()


@pytest.mark.parametrize("output", ["x.txt", "sub", "file.mp4/x.mp4", "locked/x.mp4"])
def test_unwritable_output_is_refused_before_generating(tiny_engines: Path, tmp_path: Path, output: str) -> None:
    """A wrong suffix, a folder, a path under a file, a read-only folder: refused up front, in one line."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "file.mp4").write_bytes(b"keep")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if os.geteuid() == 0 and output.startswith("locked"):
        pytest.skip("root writes into read-only folders; the permission case needs a normal user")
    before = snapshot(tmp_path)
    result = t2vtrt("generate", PROMPT, "--engines", str(tiny_engines), "-o", str(tmp_path / output), *FAST)
    assert_one_line_error(result, "cannot write")
    assert snapshot(tmp_path) == before


def test_output_under_a_path_the_system_refuses(tiny_engines: Path) -> None:
    """/proc refuses new files even to root: the writer's OSError becomes one line naming the output."""
    result = t2vtrt("generate", PROMPT, "--engines", str(tiny_engines), "-o", "/proc/t2vtrt-test.mp4", *FAST)
    assert_one_line_error(result, "writing /proc/t2vtrt-test.mp4 failed")


def test_long_prompt_is_cut_with_a_warning(tiny_engines: Path, tmp_path: Path) -> None:
    """A prompt past the encoder's 77 tokens runs, and says how many tokens were dropped (CLI and API)."""
    long_prompt = " ".join(["balloon"] * 100)  # 100 words + begin/end tokens = 102 tokens
    result = t2vtrt("generate", long_prompt, "--engines", str(tiny_engines), "-o", str(tmp_path / "x.mp4"), *FAST)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.strip()]
    assert warnings == [
        "warning: the prompt is longer than the text encoder's 77 tokens: the last 25 token(s) were dropped; shorten it to keep all of it"
    ]
    pipe = Pipeline.from_dir(tiny_engines)
    assert pipe.generate(PROMPT, frames=1, steps=1).warnings == []
    (line,) = pipe.generate([PROMPT, long_prompt], frames=1, steps=1).warnings
    assert "prompt 1 " in line and "25 token(s)" in line


def test_generate_output_has_no_blank_line(tiny_engines: Path, tmp_path: Path) -> None:
    """stdout is exactly the result line (no leading blank line from a progress bar), sizes as WxH."""
    exe = Path(sys.executable).with_name("t2vtrt")
    result = subprocess.run(
        [
            str(exe),
            "generate",
            PROMPT,
            "--engines",
            str(tiny_engines),
            "-o",
            str(tmp_path / "x.mp4"),
            "--frames",
            "2",
            "--steps",
            "2",
            "--width",
            "64",
            "--height",
            "32",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.splitlines()
    assert line.startswith(str(tmp_path / "x.mp4")) and "2 frames 64x32 (WxH)" in line


def test_api_refuses_what_the_cli_refuses(tiny_engines: Path) -> None:
    """The runtime API has the same contract: 0 is not 'default', NaN is not 'off'."""
    pipe = Pipeline.from_dir(tiny_engines)
    for kwargs, words in [
        ({"steps": 0}, "steps must be >= 1"),
        ({"frames": 0}, "frames=0"),
        ({"width": 0}, "width=0"),
        ({"guidance": float("nan")}, "guidance=nan"),
        ({"seed": -1}, "seed must be"),
        ({"steps": 1.5}, "whole number"),
        ({"sampler": "flow-euler"}, "does not fit"),
    ]:
        with pytest.raises(T2VError, match=words):
            pipe(PROMPT, **kwargs)
    with pytest.raises(T2VError, match="precision ''"):
        Pipeline.from_dir(tiny_engines, precision="")


def test_damaged_graph_without_hash_checks_is_one_error(engines_copy: Path) -> None:
    """verify_hashes=False on a truncated graph: the backend's raw error becomes a T2VError naming the file."""
    graph = engines_copy / "vae_decoder.fp32.onnx"
    graph.write_bytes(graph.read_bytes()[:1000])
    with pytest.raises(T2VError, match="vae_decoder.fp32.onnx cannot be loaded by onnxruntime") as info:
        Pipeline.from_dir(engines_copy, verify_hashes=False)
    assert "\n" not in str(info.value)


def test_engine_run_failure_is_one_error(tiny_engines: Path) -> None:
    """A backend failure while running (here: a session closed under the call) is a T2VError naming the component."""
    pipe = Pipeline.from_dir(tiny_engines)
    pipe.sessions["vae_decoder"].inner.session = None
    with pytest.raises(T2VError, match="vae_decoder: the engine failed to run"):
        pipe(PROMPT, frames=1, steps=1)
    assert np.isfinite(Pipeline.from_dir(tiny_engines)(PROMPT, frames=1, steps=1)).all()
