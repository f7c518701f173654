"""kill -9 mid-stage, then a plain rerun: the stage finishes, its leftovers are gone, and the result is a clean run's."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from cli_run import assert_one_line_error, snapshot, t2vtrt

from t2vtrt.build.artifacts import ArtifactPaths
from t2vtrt.runtime.files import atomic_path, remove_stale
from t2vtrt.runtime.manifest import load_manifest
from t2vtrt.runtime.video import write_video


def _hidden(folder: Path) -> list[str]:
    """Dot-named entries of a folder (temp files and directories), the build lock aside."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) if folder.is_dir() else []


def _kill_when_a_temp_appears(args: list[str], folder: Path, deadline_s: float = 120.0) -> list[str]:
    """Start the CLI, SIGKILL it as soon as it has a temp path in `folder`; return what it left there."""
    exe = Path(sys.executable).with_name("t2vtrt")
    child = subprocess.Popen([str(exe), "--quiet", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    end = time.monotonic() + deadline_s
    try:
        while time.monotonic() < end and child.poll() is None:
            if _hidden(folder):
                child.send_signal(signal.SIGKILL)
                break
            time.sleep(0.01)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL, "the stage finished before it could be killed mid-write"
    return _hidden(folder)


def _copy(tiny_paths: ArtifactPaths, root: Path) -> ArtifactPaths:
    """A private copy of the tiny model's artifacts (model, onnx; engines rebuilt by the test)."""
    paths = ArtifactPaths(root / "tiny")
    for folder in ("model", "onnx"):
        shutil.copytree(tiny_paths.root / folder, paths.root / folder)
    return paths


@pytest.mark.parametrize("stage", ["surgery", "engines"])
def test_kill_mid_stage_then_resume(tiny_paths: ArtifactPaths, tmp_path: Path, stage: str) -> None:
    """The killed stage leaves temp paths; the next run of it removes them and writes what a clean run writes."""
    paths = _copy(tiny_paths, tmp_path)
    args = [stage, "--model", "tiny", "--artifacts", str(tmp_path), *(["--gpu", "cpu"] if stage == "engines" else [])]
    watch = paths.root / "engines" if stage == "engines" else paths.onnx_dir
    watch.mkdir(parents=True, exist_ok=True)
    assert _kill_when_a_temp_appears(args, watch)  # e.g. engines/.cpu.<pid>.<random>.tmp
    result = t2vtrt(*args)
    assert result.returncode == 0, result.stderr
    assert _hidden(watch) == []
    if stage == "surgery":
        report = json.loads(paths.surgery_report.read_text())
        assert report["graphs"] == json.loads(tiny_paths.surgery_report.read_text())["graphs"]  # same graphs as a clean run
    else:
        load_manifest(paths.engines_dir("cpu"))  # every hash verifies


def test_kill_mid_export_then_resume(tiny_paths: ArtifactPaths, tmp_path: Path) -> None:
    """Export killed while torch writes a graph: the rerun removes onnx/.<graph>.<pid>.*.tmp and exports the same graphs."""
    onnx_dir = tmp_path / "tiny" / "onnx"
    onnx_dir.mkdir(parents=True)
    left = _kill_when_a_temp_appears(["export", "--model", "tiny", "--artifacts", str(tmp_path)], onnx_dir)
    assert any(name.endswith(".tmp") for name in left)
    result = t2vtrt("export", "--model", "tiny", "--artifacts", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert _hidden(onnx_dir) == []
    assert json.loads((onnx_dir / "export.json").read_text())["graphs"] == json.loads(tiny_paths.export_info.read_text())["graphs"]


def test_dead_writers_temp_paths_are_removed_live_ones_kept(tmp_path: Path, dead_pid: int) -> None:
    """Only temp paths whose process is gone are removed: a concurrent live writer keeps its own."""
    final = tmp_path / "f_000.png"
    dead = [tmp_path / f".f_000.png.{dead_pid}.abc.tmp", tmp_path / f".f_000.png.{dead_pid}.dir.tmp"]
    dead[0].write_bytes(b"half a frame")
    dead[1].mkdir()
    live = tmp_path / f".f_000.png.{os.getppid()}.xyz.tmp"
    live.write_bytes(b"being written")
    other = tmp_path / ".f_000.png.notapid.tmp"  # not one of ours: never touched
    other.write_bytes(b"?")
    assert sorted(remove_stale(final)) == sorted(dead)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name])
    with atomic_path(final) as tmp:  # every writer cleans up before it writes
        tmp.write_bytes(b"frame")
    assert final.read_bytes() == b"frame" and live.exists()


def test_png_output_after_a_killed_generate(tmp_path: Path, dead_pid: int) -> None:
    """A png sequence killed mid-write left temp files and dirs: the next write of that output removes them."""
    (tmp_path / f".f.png.{dead_pid}.k1.tmp").mkdir()
    (tmp_path / f".f.png.{dead_pid}.k1.tmp" / "f_000.png").write_bytes(b"x")
    (tmp_path / f".f_001.png.{dead_pid}.k2.tmp").write_bytes(b"x")
    write_video(np.zeros((2, 16, 16, 3), np.uint8), tmp_path / "f.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f_000.png", "f_001.png"]


def test_bogus_model_names_leave_no_lock(tmp_path: Path) -> None:
    """`--model nosuch` on every stage: one line each, and no artifacts/.locks/nosuch.lock (or anything) is created."""
    art = tmp_path / "art"
    for stage in ("export", "surgery", "calibrate", "quantize", "engines", "summary"):
        result = t2vtrt(stage, "--model", "nosuch", "--artifacts", str(art))
        assert_one_line_error(result, "nosuch")
    assert not art.exists()


def test_two_concurrent_builds_of_one_model(tiny_paths: ArtifactPaths, tmp_path: Path) -> None:
    """Two `engines` runs at once: the second waits for the first; both succeed and the target is whole."""
    paths = _copy(tiny_paths, tmp_path)
    exe = Path(sys.executable).with_name("t2vtrt")
    args = [str(exe), "--quiet", "engines", "--model", "tiny", "--artifacts", str(tmp_path), "--gpu", "cpu"]
    runs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [run.communicate(timeout=300) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    assert any("waiting for another build" in err for _, err in outputs)
    load_manifest(paths.engines_dir("cpu"))
    assert _hidden(paths.root / "engines") == [] and _hidden(paths.onnx_dir) == []


def test_stage_on_a_full_disk(tiny_paths: ArtifactPaths, full_disk) -> None:  # type: ignore[no-untyped-def]
    """The engines stage on a full disk: one line naming the fault; the previous target untouched, no temp left."""
    root = full_disk.path
    paths = ArtifactPaths(root / "tiny")
    paths.onnx_dir.mkdir(parents=True)
    for source in tiny_paths.onnx_dir.iterdir():  # the stage's inputs live elsewhere: only its outputs need room
        os.symlink(source, paths.onnx_dir / source.name)
    before = snapshot(paths.root)
    result = t2vtrt("engines", "--model", "tiny", "--artifacts", str(root), "--gpu", "cpu", **full_disk.popen)
    assert_one_line_error(result, "run it again")
    assert snapshot(paths.root) == before and _hidden(paths.root / "engines") == []
