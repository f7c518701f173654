"""history.jsonl: one line per night, the figures it records, and what counts as a regression."""

from __future__ import annotations

import fnmatch
import json
import os
from pathlib import Path
from typing import Any

from t2vtrt.build.compare.run import CompareRun

Entry = dict[str, Any]


def append_entry(path: Path, entry: Entry) -> None:
    """Append one JSON line in a single write (appends of one short line do not interleave on POSIX)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(entry, sort_keys=True) + "\n"
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line)
        handle.flush()
        os.fsync(handle.fileno())


def read_history(path: Path) -> list[Entry]:
    """Every entry, oldest first (a torn last line from a killed run is skipped)."""
    if not path.is_file():
        return []
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:
            continue
    return entries


def last_good(entries: list[Entry], target: str) -> Entry | None:
    """The newest entry of `target` that passed: the baseline a night is held to."""
    return next((e for e in reversed(entries) if e.get("target") == target and e.get("passed")), None)


def accuracy_figures(run: CompareRun) -> dict[str, dict[str, dict[str, float]]]:
    """Per graph variant its worst metrics over outputs; per video precision PSNR/SSIM over cases."""
    graph: dict[str, dict[str, float]] = {}
    for check in (c for c in run.checks if c.kind == "graph" and c.metrics):
        key = check.subject.replace(" ", "/")
        outputs = list(check.metrics.values())
        graph[key] = {
            "rel_l2": max(m["rel_l2"] for m in outputs),
            "cosine": min(m["cosine"] for m in outputs),
            "psnr": min(m["psnr"] for m in outputs),
        }
    video: dict[str, dict[str, float]] = {}
    for check in (c for c in run.checks if c.kind == "video" and c.metrics):
        cases = list(check.metrics.values())
        video[check.precision] = {
            "psnr_min": min(m["psnr_min"] for m in cases),
            "psnr_mean": sum(m["psnr_mean"] for m in cases) / len(cases),
            "ssim_min": min(m["ssim_min"] for m in cases),
        }
    return {"graph": graph, "video": video}


def speed_figures(bench: dict[str, Any] | None) -> dict[str, float]:
    """Every number in bench.json, flattened to 'a/b/c' keys."""
    out: dict[str, float] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}/{key}" if prefix else str(key), inner)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[prefix] = float(value)

    walk("", bench or {})
    return out


def speed_direction(key: str, rules: dict[str, Any]) -> str | None:
    """'lower' or 'higher' is better for a bench figure; None when it is only recorded."""
    if any(fnmatch.fnmatch(key, p) for p in rules.get("not_gated", [])):
        return None
    if any(fnmatch.fnmatch(key, p) for p in rules.get("lower_is_better", [])):
        return "lower"
    if any(fnmatch.fnmatch(key, p) for p in rules.get("higher_is_better", [])):
        return "higher"
    return None


def regressions(entry: Entry, baseline: Entry | None, rules: dict[str, Any]) -> list[str]:
    """Figures of `entry` worse than the last good night's beyond the [regression] budgets."""
    if baseline is None:
        return []
    found = _psnr_drops(entry, baseline, "video", "psnr_mean", rules["video_psnr_drop_db"], rules)
    found += _psnr_drops(entry, baseline, "graph", "psnr", rules["graph_psnr_drop_db"], rules)
    return found + _slowdowns(entry.get("speed", {}), baseline.get("speed", {}), rules)


def _psnr_drops(entry: Entry, baseline: Entry, kind: str, metric: str, budget: float, rules: dict[str, Any]) -> list[str]:
    """PSNRs that fell more than `budget` dB below the baseline's (ignored above the floor)."""
    new, old = entry["accuracy"][kind], baseline.get("accuracy", {}).get(kind, {})
    out = []
    for key in sorted(set(new) & set(old)):
        now, before = new[key][metric], old[key][metric]
        if now < rules["psnr_floor_db"] and before - now > budget:
            out.append(
                f"{kind} {key}: {metric} {now:.2f} dB is {before - now:.2f} dB below the last good night's {before:.2f} dB (budget {budget:g} dB)"
            )
    return out


def _slowdowns(new: dict[str, float], old: dict[str, float], rules: dict[str, Any]) -> list[str]:
    """Gated bench figures worse than the baseline's by more than the `slowdown` fraction."""
    limit = rules["slowdown"]
    out = []
    for key in sorted(set(new) & set(old)):
        direction, now, before = speed_direction(key, rules), new[key], old[key]
        worse = (direction == "lower" and now > before * (1 + limit)) or (direction == "higher" and now < before * (1 - limit))
        if worse:
            out.append(f"bench {key}: {now:.4g} vs the last good night's {before:.4g} ({direction} is better, budget {limit:.0%})")
    return out
