"""PNGs for reviewers: FP32 | precision | |diff| frame grids, and per-frame PSNR per precision."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from t2vtrt.build.compare.run import CompareRun
from t2vtrt.runtime.files import atomic_path

MAX_ROWS = 8  # frames shown per grid: long clips are sampled evenly
PLOT_CEILING_DB = 100.0  # the PSNR plot clips here: near-identical frames (up to the 200 dB cap) would flatten the rest


def pyplot():  # type: ignore[no-untyped-def]
    """matplotlib on the Agg backend: CI machines have no display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_plots(reports_dir: Path, run: CompareRun) -> dict[str, Path]:
    """A frame grid per compared precision (first case) and one per-frame PSNR plot; name -> path."""
    written: dict[str, Path] = {}
    for precision, videos in run.videos.items():
        key = next(iter(videos))
        written[f"frames-{precision}"] = frame_grid(
            run.reference_videos[key], videos[key], precision, reports_dir / f"frames-{precision}.png", title=key
        )
    series = {f"{c.precision} {key}": m["psnr"] for c in run.checks if c.kind == "video" and c.metrics for key, m in c.metrics.items()}
    if series:
        written["psnr"] = psnr_plot(series, reports_dir / "psnr.png")
    return written


def frame_grid(reference: np.ndarray, test: np.ndarray, label: str, path: Path, title: str = "") -> Path:
    """Rows of frames: FP32 | `label` | |diff| heatmap (the heatmap's scale is in the column title)."""
    plt = pyplot()
    rows = np.unique(np.linspace(0, len(reference) - 1, min(MAX_ROWS, len(reference))).round().astype(int))
    diff = np.abs(reference.astype(np.int16) - test.astype(np.int16)).max(axis=-1)
    vmax = max(int(diff.max()), 1)
    fig, axes = plt.subplots(len(rows), 3, figsize=(7.5, 2.4 * len(rows)), squeeze=False, layout="constrained")
    for row, frame in enumerate(rows):
        for col, (image, name) in enumerate(((reference[frame], "fp32 (ONNX)"), (test[frame], label), (diff[frame], f"|diff| (max {vmax})"))):
            ax = axes[row][col]
            ax.imshow(image, cmap="inferno" if col == 2 else None, vmin=0 if col == 2 else None, vmax=vmax if col == 2 else None)
            ax.set_xticks([]), ax.set_yticks([])
            if row == 0:
                ax.set_title(name, fontsize=9)
            if col == 0:
                ax.set_ylabel(f"frame {frame}", fontsize=8)
    fig.suptitle(f"{title}: fp32 vs {label}", fontsize=10)
    return save_figure(fig, path)


def psnr_plot(series: dict[str, list[float]], path: Path) -> Path:
    """Per-frame PSNR, one line per precision and case (clipped at PLOT_CEILING_DB)."""
    plt = pyplot()
    # Tall enough for the legend beside the axes (18 held-out cases x 2 precisions is 36 entries).
    fig, ax = plt.subplots(figsize=(8, max(3.5, 0.2 * len(series))), layout="constrained")
    for name, values in series.items():
        ax.plot(range(len(values)), np.minimum(values, PLOT_CEILING_DB), marker="o", markersize=3, label=name)
    ax.set_xlabel("frame")
    ax.set_ylabel(f"PSNR vs fp32 ONNX (dB, clipped at {PLOT_CEILING_DB:g})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return save_figure(fig, path)


def save_figure(fig, path: Path) -> Path:  # type: ignore[no-untyped-def]
    """Write a figure atomically and free it."""
    plt = pyplot()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return path
