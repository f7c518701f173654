"""The `t2vtrt` command end to end, and its one-line errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_run import assert_one_line_error, t2vtrt

from t2vtrt.runtime.video import read_video

PROMPT = "a red balloon rising over a lake"


def test_generate_writes_a_playable_mp4(tiny_engines: Path, tmp_path: Path) -> None:
    """The mp4 reads back with the requested frame count and size."""
    out = tmp_path / "balloon.mp4"
    result = t2vtrt(
        "generate",
        PROMPT,
        "--engines",
        str(tiny_engines),
        "-o",
        str(out),
        "--frames",
        "6",
        "--height",
        "48",
        "--width",
        "64",
        "--steps",
        "3",
        "--sampler",
        "dpm++",
    )
    assert result.returncode == 0, result.stderr
    video = read_video(out)
    assert video.shape == (6, 48, 64, 3)
    assert video.std() > 0  # not a blank clip


def test_generate_gif_and_png(tiny_engines: Path, tmp_path: Path) -> None:
    """.gif and .png outputs also work."""
    for name in ("clip.gif", "frame.png"):
        result = t2vtrt("generate", PROMPT, "--engines", str(tiny_engines), "-o", str(tmp_path / name), "--frames", "2", "--steps", "1")
        assert result.returncode == 0, result.stderr
    assert read_video(tmp_path / "clip.gif").shape[0] == 2
    assert (tmp_path / "frame_001.png").is_file()


def test_empty_prompt(tiny_engines: Path, tmp_path: Path) -> None:
    """An empty prompt is refused before anything runs."""
    result = t2vtrt("generate", "  ", "--engines", str(tiny_engines), "-o", str(tmp_path / "x.mp4"))
    assert_one_line_error(result, "prompt is empty")
    assert not (tmp_path / "x.mp4").exists()


@pytest.mark.parametrize(
    ("flag", "value", "name"), [("--frames", "17", "frames=17"), ("--height", "256", "height=256"), ("--width", "16", "width=16")]
)
def test_sizes_outside_the_built_ranges(tiny_engines: Path, tmp_path: Path, flag: str, value: str, name: str) -> None:
    """Frames/height/width outside the manifest's ranges: one line naming the value and the range."""
    result = t2vtrt("generate", PROMPT, "--engines", str(tiny_engines), "-o", str(tmp_path / "x.mp4"), flag, value)
    assert_one_line_error(result, name, "outside the range")
    assert not (tmp_path / "x.mp4").exists()


def test_manifest_hash_mismatch(engines_copy: Path, tmp_path: Path) -> None:
    """A graph changed after the build is refused, naming the file."""
    graph = engines_copy / "vae_decoder.fp32.onnx"
    graph.write_bytes(graph.read_bytes() + b"\0")
    result = t2vtrt("generate", PROMPT, "--engines", str(engines_copy), "-o", str(tmp_path / "x.mp4"))
    assert_one_line_error(result, "vae_decoder.fp32.onnx", "does not match its manifest hash")


def test_manifest_not_matching_the_schema(engines_copy: Path, tmp_path: Path) -> None:
    """A manifest with a wrong field is refused by the schema check, naming where."""
    path = engines_copy / "manifest.json"
    data = json.loads(path.read_text())
    data["latent"]["channels"] = "four"
    path.write_text(json.dumps(data))
    result = t2vtrt("generate", PROMPT, "--engines", str(engines_copy), "-o", str(tmp_path / "x.mp4"))
    assert_one_line_error(result, "latent/channels")


def test_engines_dir_without_manifest(tmp_path: Path) -> None:
    """A directory that is not a built target."""
    result = t2vtrt("generate", PROMPT, "--engines", str(tmp_path), "-o", str(tmp_path / "x.mp4"))
    assert_one_line_error(result, "manifest.json does not exist")


def test_model_directory_missing(tmp_path: Path) -> None:
    """MODEL=/does/not/exist."""
    result = t2vtrt("export", "--model", str(tmp_path / "nope"), "--artifacts", str(tmp_path / "art"))
    assert_one_line_error(result, "does not exist")
    assert not (tmp_path / "art").exists() or not any((tmp_path / "art").rglob("*.onnx"))


def test_model_directory_missing_a_component(tiny_paths, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A unet3d directory without its vae/ folder names the folder; nothing is written."""
    import shutil

    model = tmp_path / "broken"
    shutil.copytree(tiny_paths.model_dir, model)
    shutil.rmtree(model / "vae")
    result = t2vtrt("export", "--model", str(model), "--artifacts", str(tmp_path / "art"))
    assert_one_line_error(result, "vae/")
    assert not any((tmp_path / "art").rglob("*.onnx"))


def test_unknown_family(tmp_path: Path) -> None:
    """A diffusers directory of a class no family knows."""
    model = tmp_path / "other"
    (model / "unet").mkdir(parents=True)
    (model / "unet" / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel"}))
    result = t2vtrt("export", "--model", str(model), "--artifacts", str(tmp_path / "art"))
    assert_one_line_error(result, "matches no known family")


def test_unknown_embedded_name(tmp_path: Path) -> None:
    """A bare name that is neither embedded nor a directory."""
    result = t2vtrt("export", "--model", "giant", "--artifacts", str(tmp_path / "art"))
    assert_one_line_error(result, "unknown model 'giant'", "tiny")


def test_unknown_gpu_name(tiny_paths, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """GPU=rtx9999 names the profile and where the profiles are."""
    result = t2vtrt("engines", "--model", "tiny", "--artifacts", str(tiny_paths.root.parent), "--gpu", "rtx9999")
    assert_one_line_error(result, "rtx9999")


def test_unknown_sampler(tiny_engines: Path, tmp_path: Path) -> None:
    """--sampler with a typo lists the valid ones."""
    result = t2vtrt("generate", PROMPT, "--engines", str(tiny_engines), "-o", str(tmp_path / "x.mp4"), "--sampler", "euler-a")
    assert_one_line_error(result, "euler-a", "ddim")


def test_unknown_precision(tiny_engines: Path, tmp_path: Path) -> None:
    """--precision that was not built."""
    result = t2vtrt("generate", PROMPT, "--engines", str(tiny_engines), "-o", str(tmp_path / "x.mp4"), "--precision", "fp8")
    assert_one_line_error(result, "fp8", "fp32")


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("triton-repo", "--engines", "x", "-o", "y", "--version", "0"), ("'--version'", "0", "`t2vtrt triton-repo --help`")),
        (("generate", PROMPT, "--engines", "x", "--steps", "many"), ("'--steps'", "many", "`t2vtrt generate --help`")),
        (("engines", "--no-such-flag"), ("--no-such-flag", "`t2vtrt engines --help`")),
        (("no-such-command",), ("no-such-command", "`t2vtrt --help`")),
    ],
    ids=["out-of-range", "not-a-number", "unknown-option", "unknown-command"],
)
def test_usage_mistakes_are_one_line(args: tuple[str, ...], words: tuple[str, ...]) -> None:
    """A mistyped option, value or command: one `error:` line naming it and the help to read, not Click's usage block."""
    assert_one_line_error(t2vtrt(*args), *words)
