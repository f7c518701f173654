"""`t2vtrt nightly`: history lines, promotion only of passing builds, regressions vs the last good night."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest

from t2vtrt.build.artifacts import ArtifactPaths
from t2vtrt.build.compare import load_tolerances
from t2vtrt.build.compare.capture import EvalSet
from t2vtrt.build.nightly import run_nightly
from t2vtrt.build.nightly.history import read_history
from t2vtrt.runtime.errors import T2VError

SMALL_EVAL = EvalSet(prompts=("a red balloon rising over a lake",), seeds=(0,), steps=2, denoiser_samples=1)


@pytest.fixture()
def copy_build(tiny_paths: ArtifactPaths):  # type: ignore[no-untyped-def]
    """A build callable that copies the session's already-built tiny stages (the real from-scratch build costs ~15 s)."""

    def build(model: str, target: str, root: Path) -> Path:
        shutil.copytree(tiny_paths.root, root / model, ignore=shutil.ignore_patterns("reports", "golden", "logs"))
        return ArtifactPaths(root / model).engines_dir(target)

    return build


def fake_bench(total_s: float):  # type: ignore[no-untyped-def]
    """A bench callable writing a bench.json shaped like `make bench`'s."""

    def bench(model: str, root: Path) -> None:
        reports = ArtifactPaths(root / model).reports_dir
        reports.mkdir(parents=True, exist_ok=True)
        (reports / "bench.json").write_text(json.dumps({"sides": {"fp32": {"total_s": total_s}}, "runtime_vs_diffusers_speedup": 3.0}))

    return bench


def _latest(artifacts: Path) -> str:
    """The build `latest` points at."""
    return (artifacts / "tiny" / "nightly" / "cpu" / "latest").resolve().name


def test_two_nights_append_two_history_lines(tmp_path: Path, copy_build) -> None:  # type: ignore[no-untyped-def]
    first = run_nightly("tiny", "cpu", tmp_path, build=copy_build, eval_set=SMALL_EVAL, bench=fake_bench(1.0))
    second = run_nightly("tiny", "cpu", tmp_path, build=copy_build, eval_set=SMALL_EVAL, bench=fake_bench(1.1))
    assert first.passed and second.passed, (first.failures, second.failures)
    lines = (tmp_path / "tiny" / "history.jsonl").read_text().splitlines()
    assert len(lines) == 2
    entry = json.loads(lines[1])
    assert entry["promoted"] and entry["baseline"] == first.entry["date"] and entry["regressions"] == []
    assert entry["speed"]["sides/fp32/total_s"] == 1.1 and len(entry["model_hash"]) == 64
    assert entry["accuracy"]["graph"]["denoiser/fp32"]["rel_l2"] < 1e-5 and "fp32" in entry["accuracy"]["video"]
    assert entry["versions"]["onnxruntime"] and entry["hashes"]["denoiser.fp32.onnx"]
    # The first night recorded the golden set; the second was held to it.
    assert (first.entry["golden"], entry["golden"]) == ("saved", "compared")
    assert all(c.status == "passed" for c in second.compare.checks if c.kind.startswith("golden"))
    assert _latest(tmp_path) == second.build_root.name
    assert (second.latest / "tiny" / "engines" / "cpu" / "manifest.json").is_file()
    summary = (tmp_path / "tiny" / "reports" / "nightly-cpu.md").read_text()
    assert summary.count("| promoted |") == 2
    assert (tmp_path / "tiny" / "reports" / "nightly-cpu.png").is_file()


def test_a_regression_leaves_latest_at_the_last_good_build(tmp_path: Path, copy_build) -> None:  # type: ignore[no-untyped-def]
    good = run_nightly("tiny", "cpu", tmp_path, build=copy_build, eval_set=SMALL_EVAL, bench=fake_bench(1.0))
    assert good.passed, good.failures

    strict = copy.deepcopy(load_tolerances())
    strict["graph"]["denoiser"]["fp32"]["psnr"] = 1000.0  # a tightened threshold no build can meet
    tightened = run_nightly("tiny", "cpu", tmp_path, build=copy_build, eval_set=SMALL_EVAL, tolerances=strict)
    assert not tightened.passed
    assert any(f.startswith("denoiser fp32: psnr") for f in tightened.failures)
    assert _latest(tmp_path) == good.build_root.name

    slower = run_nightly("tiny", "cpu", tmp_path, build=copy_build, eval_set=SMALL_EVAL, bench=fake_bench(2.0), keep=1)
    assert not slower.passed
    assert len(slower.failures) == 1 and slower.failures[0].startswith("bench sides/fp32/total_s: 2 vs the last good night's 1")
    assert _latest(tmp_path) == good.build_root.name
    # Pruning to one build keeps the newest and, always, the one `latest` points at.
    kept = {p.name for p in (tmp_path / "tiny" / "nightly" / "cpu").iterdir() if not p.is_symlink()}
    assert kept == {good.build_root.name, slower.build_root.name}
    assert (good.latest / "tiny" / "engines" / "cpu" / "manifest.json").is_file()
    history = read_history(tmp_path / "tiny" / "history.jsonl")
    assert [e["passed"] for e in history] == [True, False, False]
    assert all(e["baseline"] == good.entry["date"] for e in history[1:])


def test_a_failed_build_is_recorded_and_raised(tmp_path: Path) -> None:
    def broken(model: str, target: str, root: Path) -> Path:
        raise T2VError("export failed: simulated")

    with pytest.raises(T2VError):
        run_nightly("tiny", "cpu", tmp_path, build=broken, eval_set=SMALL_EVAL)
    (entry,) = read_history(tmp_path / "tiny" / "history.jsonl")
    assert entry["passed"] is False and entry["failures"] == ["T2VError: export failed: simulated"]
    assert not (tmp_path / "tiny" / "nightly" / "cpu" / "latest").exists()
