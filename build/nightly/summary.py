"""The last N nights of one target: a markdown table and a small trend plot (reports/nightly-<target>.*)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from t2vtrt.build.nightly.history import read_history
from t2vtrt.runtime.files import atomic_path

LAST_N = 14
SPEED_COLUMNS = ("sides/fp32/total_s", "sides/int8/total_s", "runtime_vs_diffusers_speedup", "int8_vs_fp32_speedup")


def write_summary(home: Path, target: str, last: int = LAST_N) -> dict[str, Path]:
    """Write reports/nightly-<target>.md and .png from history.jsonl; return their paths."""
    entries = [e for e in read_history(home / "history.jsonl") if e.get("target") == target][-last:]
    reports = home / "reports"
    md = reports / f"nightly-{target}.md"
    with atomic_path(md) as tmp:
        tmp.write_text(markdown(entries, target))
    png = trend_plot(entries, reports / f"nightly-{target}.png")
    return {"md": md, "png": png}


def markdown(entries: list[dict[str, Any]], target: str) -> str:
    """One row per night: verdict, video PSNR per precision, the headline speed figures, what failed."""
    precisions = sorted({p for e in entries for p in e.get("accuracy", {}).get("video", {})}, key=lambda p: (p != "fp32", p))
    speeds = [k for k in SPEED_COLUMNS if any(k in e.get("speed", {}) for e in entries)]
    head = ["date", "result", *(f"video {p} PSNR mean dB" for p in precisions), *speeds, "failures"]
    lines = [f"# Nightly: {target}, last {len(entries)} nights", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for e in reversed(entries):
        video = e.get("accuracy", {}).get("video", {})
        result = "promoted" if e.get("promoted") else ("pass" if e.get("passed") else "**FAIL**")
        cells = [
            e["date"],
            result,
            *(f"{video[p]['psnr_mean']:.2f}" if p in video else "-" for p in precisions),
            *(f"{e['speed'][k]:.3g}" if k in e.get("speed", {}) else "-" for k in speeds),
            "; ".join(e.get("failures", []))[:200] or "-",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def trend_plot(entries: list[dict[str, Any]], path: Path) -> Path:
    """Video PSNR mean per precision (left) and the headline speed figures (right), night by night."""
    from t2vtrt.build.compare.plots import PLOT_CEILING_DB, pyplot, save_figure

    plt = pyplot()
    fig, (acc, speed) = plt.subplots(1, 2, figsize=(10, 3.2), layout="constrained")
    nights = range(len(entries))
    precisions = sorted({p for e in entries for p in e.get("accuracy", {}).get("video", {})})
    for p in precisions:
        values = [
            min(e["accuracy"]["video"][p]["psnr_mean"], PLOT_CEILING_DB) if p in e.get("accuracy", {}).get("video", {}) else None for e in entries
        ]
        acc.plot(nights, [float("nan") if v is None else v for v in values], marker="o", label=p)
    failed = [i for i, e in enumerate(entries) if not e.get("passed")]
    for i in failed:
        acc.axvline(i, color="red", alpha=0.25)
    acc.set_title("video PSNR mean vs fp32 (dB); red = failed night", fontsize=9)
    for key in SPEED_COLUMNS:
        values = [e.get("speed", {}).get(key, float("nan")) for e in entries]
        if any(v == v for v in values):  # NaN != NaN: skip figures no night recorded
            speed.plot(nights, values, marker="o", label=key)
    speed.set_title("bench figures", fontsize=9)
    for ax in (acc, speed):
        ax.set_xlabel("night")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    return save_figure(fig, path)
