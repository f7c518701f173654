"""`t2vtrt nightly`: rebuild from scratch into a fresh directory, compare, bench, record, promote when good.

Layout under artifacts/<model>/:
    nightly/<target>/<stamp>/<model>/...   one night's whole artifacts root (every stage, reports)
    nightly/<target>/latest -> <stamp>     the newest build that passed; swapped atomically
    history.jsonl                          one line per night and target
    golden/                                the golden set: recorded by the first night, compared by the next
    reports/nightly-<target>.{md,png}      the last nights as a table and a trend plot
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from t2vtrt.build.artifacts import ArtifactPaths
from t2vtrt.build.compare.capture import EvalSet
from t2vtrt.build.compare.run import CompareRun
from t2vtrt.build.compare.stage import run_compare
from t2vtrt.build.compare.tolerances import load_tolerances
from t2vtrt.build.engines.manifest import tool_versions
from t2vtrt.build.models import artifact_name
from t2vtrt.build.stages import build_all
from t2vtrt.build.nightly.history import accuracy_figures, append_entry, last_good, read_history, regressions, speed_figures
from t2vtrt.runtime.files import sha256_file

BuildFn = Callable[[str, str, Path], Path]  # (model, target, fresh artifacts root) -> engines/<target> dir
BenchFn = Callable[[str, Path], None]  # (model, artifacts root) -> writes <root>/<name>/reports/bench.json


@dataclass
class NightlyResult:
    """One night: its history line, where it was built, and whether it became `latest`."""

    entry: dict[str, Any]
    build_root: Path
    target_dir: Path
    latest: Path
    compare: CompareRun | None = None
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when every gate passed and nothing regressed."""
        return bool(self.entry["passed"])


def bench_module(model: str, root: Path) -> None:
    """`make bench` on this night's build: python -m t2vtrt.build.bench.run --model M --artifacts ROOT."""
    from t2vtrt.build.bench.run import main

    main(["--model", model, "--artifacts", str(root)])


def run_nightly(
    model: str,
    target: str,
    artifacts: Path,
    build: BuildFn = build_all,
    bench: BenchFn | None = None,
    tolerances: dict[str, Any] | None = None,
    eval_set: EvalSet | None = None,
    keep: int = 7,
    on_step: Callable[[str], None] | None = None,
) -> NightlyResult:
    """One night for one model and target; the result's entry is already appended to history.jsonl."""
    name = artifact_name(model)
    home = artifacts / name
    nights = home / "nightly" / target
    root = _fresh_dir(nights)
    step = on_step or (lambda _: None)
    tolerances = tolerances or load_tolerances()
    seconds: dict[str, float] = {}
    entry: dict[str, Any] = {
        "date": _now(),
        "model": name,
        "target": target,
        "build": str(root.relative_to(home)),
        "versions": tool_versions(),
        "passed": False,
        "promoted": False,
    }
    result = NightlyResult(entry, root, ArtifactPaths(root / name).engines_dir(target), nights / "latest")
    try:
        step("build")
        _seed_timing_cache(home, root / name)
        result.target_dir = _timed(seconds, "build", lambda: build(model, target, root))
        _save_timing_cache(root / name, home)
        step("compare")
        # The model's golden set: the first night records it, later nights are held to it (version drift).
        golden = home / "golden"
        result.compare = _timed(
            seconds,
            "compare",
            lambda: run_compare(
                result.target_dir,
                ArtifactPaths(root / name),
                tolerances,
                eval_set,
                golden_dir=golden,
                save_golden_set=not (golden / "golden.json").is_file(),
            ),
        )
        if bench is not None:
            step("bench")
            _timed(seconds, "bench", lambda: bench(model, root))
        _record(result, result.compare, home, tolerances)
    except Exception as exc:
        result.failures.append(f"{type(exc).__name__}: {exc}")
        raise
    finally:
        _finish(result, home, nights, seconds, keep)
    return result


def _record(result: NightlyResult, run: CompareRun, home: Path, tolerances: dict[str, Any]) -> None:
    """Fill the entry: hashes, accuracy and speed figures, gate failures and regressions vs the last good night."""
    entry = result.entry
    manifest = json.loads((result.target_dir / "manifest.json").read_text())
    entry["model_hash"] = manifest["model"]["hash"]
    entry["manifest_sha256"] = sha256_file(result.target_dir / "manifest.json")
    entry["hashes"] = {v["file"]: v["sha256"] for c in manifest["components"].values() for v in c["variants"].values()}
    entry["accuracy"] = accuracy_figures(run)
    entry["golden"] = run.report["golden"]["status"]
    bench_json = ArtifactPaths(result.build_root / entry["model"]).reports_dir / "bench.json"
    entry["speed"] = speed_figures(json.loads(bench_json.read_text()) if bench_json.is_file() else None)
    result.failures += run.failures
    baseline = last_good(read_history(home / "history.jsonl"), entry["target"])
    entry["baseline"] = baseline["date"] if baseline else None
    entry["regressions"] = regressions(entry, baseline, tolerances["regression"])
    result.failures += entry["regressions"]


def _finish(result: NightlyResult, home: Path, nights: Path, seconds: dict[str, float], keep: int) -> None:
    """Decide, promote when good, append the history line, prune old builds, refresh the summary."""
    from t2vtrt.build.nightly.summary import write_summary

    entry = result.entry
    entry["seconds"] = {k: round(v, 2) for k, v in seconds.items()}
    entry["failures"] = result.failures
    entry["passed"] = result.compare is not None and not result.failures
    if entry["passed"]:
        promote(nights, result.build_root.name)
        entry["promoted"] = True
    append_entry(home / "history.jsonl", entry)
    prune(nights, keep)
    write_summary(home, entry["target"])


def promote(nights: Path, stamp: str) -> Path:
    """Point nights/latest at `stamp` atomically (a new symlink renamed over the old one)."""
    latest = nights / "latest"
    tmp = nights / f".latest.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(stamp, target_is_directory=True)
    os.replace(tmp, latest)
    return latest


def prune(nights: Path, keep: int) -> None:
    """Delete all but the `keep` newest builds; the one `latest` points at always stays."""
    latest = (nights / "latest").resolve() if (nights / "latest").is_symlink() else None
    builds = sorted(p for p in nights.iterdir() if p.is_dir() and not p.is_symlink() and not p.name.startswith("."))
    for old in builds[:-keep] if keep > 0 else builds:
        if latest is None or old.resolve() != latest:
            shutil.rmtree(old, ignore_errors=True)


def _fresh_dir(nights: Path) -> Path:
    """nights/<UTC stamp>, made new (a suffix when two nights share a second)."""
    nights.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    for index in range(1000):
        path = nights / (stamp if index == 0 else f"{stamp}-{index}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"no fresh build directory under {nights}")


def _seed_timing_cache(home: Path, model_root: Path) -> None:
    """Copy the model's TensorRT timing caches (engines/timing/) into the fresh build: rebuilt engines, reused tactics."""
    shared = home / "engines" / "timing"
    if shared.is_dir():
        shutil.copytree(shared, model_root / "engines" / "timing", dirs_exist_ok=True)


def _save_timing_cache(model_root: Path, home: Path) -> None:
    """Copy the caches the build grew back to the shared place, each file swapped in atomically."""
    built = model_root / "engines" / "timing"
    if not built.is_dir():
        return
    shared = home / "engines" / "timing"
    shared.mkdir(parents=True, exist_ok=True)
    for cache in built.iterdir():
        tmp = shared / f".{cache.name}.{os.getpid()}"
        shutil.copyfile(cache, tmp)
        os.replace(tmp, shared / cache.name)


def _timed(seconds: dict[str, float], name: str, fn: Callable[[], Any]) -> Any:
    """Run fn, recording its wall time under `name`."""
    start = time.perf_counter()
    try:
        return fn()
    finally:
        seconds[name] = time.perf_counter() - start


def _now() -> str:
    """UTC ISO-8601 to the second."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
