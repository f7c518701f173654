"""Analytic prompt adherence: read a video, detect the object's color, shape and motion, compare to the prompt.

No learned model: the object is the set of saturated pixels (backgrounds are grays), its color is the
dominant hue sector, its track is the per-frame centroid and area of the pixels of that color, its
shape is how much of its bounding box it fills (square 1.0, circle 0.79, triangle 0.5).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

import numpy as np

from t2vtrt.build.shapes.data import BACKGROUNDS, COLORS, MOTION_PHRASES, MOTIONS, SHAPES

ATTRIBUTES = ("color", "shape", "motion", "background")
HUES = {"red": 0.0, "yellow": 60.0, "green": 120.0, "cyan": 180.0, "blue": 240.0, "magenta": 300.0}
CHROMA_MIN = 70.0  # max - min of RGB: grays are ~0, the palette ~190; blur at the edges falls between
MIN_PIXELS = 6  # a frame with fewer object pixels has no reliable centroid
MOVE_MIN = 8.0  # pixels of centroid travel over the clip that count as a translation (truth: 24-32)
SCALE_MIN = 0.25  # |log(size ratio)| that counts as grow/shrink (truth: log(2.0..2.5))
FILL_SQUARE, FILL_TRIANGLE = 0.89, 0.645  # thresholds between 1.0 / 0.785 / 0.5


@dataclass
class Detection:
    """What the evaluator saw in one video."""

    color: str | None
    shape: str | None
    motion: str | None
    background: str | None
    dx: float = 0.0  # fitted centroid displacement over the clip, pixels
    dy: float = 0.0
    log_scale: float = 0.0  # fitted log(size_last / size_first)
    fill: float = 0.0
    pixels: list[int] = field(default_factory=list)  # object pixels per frame


def hue_chroma(video: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel hue in degrees [0, 360) and chroma (max - min of RGB, 0-255)."""
    rgb = video.astype(np.float32)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    hi, lo = rgb.max(axis=-1), rgb.min(axis=-1)
    chroma = hi - lo
    safe = np.where(chroma > 0, chroma, 1.0)
    hue = np.where(hi == r, ((g - b) / safe) % 6, np.where(hi == g, (b - r) / safe + 2, (r - g) / safe + 4)) * 60.0
    return hue % 360.0, chroma


def hue_class(hue: np.ndarray) -> np.ndarray:
    """Index into HUES of the nearest hue center (sectors of 60 degrees)."""
    centers = np.array(list(HUES.values()), dtype=np.float32)
    diff = np.abs((hue[..., None] - centers + 180.0) % 360.0 - 180.0)
    return diff.argmin(axis=-1)


def detect(video: np.ndarray) -> Detection:
    """Detect color, shape, motion and background in a uint8 (F, H, W, 3) video."""
    hue, chroma = hue_chroma(video)
    saturated = chroma > CHROMA_MIN
    background = _background(video, saturated)
    if saturated.sum() < MIN_PIXELS * len(video):
        return Detection(None, None, None, background)
    classes = hue_class(hue)
    votes = np.bincount(classes[saturated], weights=chroma[saturated], minlength=len(HUES))
    color_index = int(votes.argmax())
    mask = saturated & (classes == color_index)
    track = _track(mask)
    motion, dx, dy, log_scale = _motion(track)
    fill = _fill(mask)
    return Detection(list(HUES)[color_index], _shape(fill), motion, background, dx, dy, log_scale, fill, [int(m.sum()) for m in mask])


def _background(video: np.ndarray, saturated: np.ndarray) -> str:
    """The gray level of the unsaturated pixels, named by the nearest background."""
    gray = video[~saturated].astype(np.float32).mean() if (~saturated).any() else 128.0
    return min(BACKGROUNDS, key=lambda name: abs(BACKGROUNDS[name] - gray))


def _track(mask: np.ndarray) -> np.ndarray:
    """Rows (frame, cx, cy, pixels) for frames where the object is visible."""
    rows = []
    height, width = mask.shape[1:]
    ys, xs = np.mgrid[0:height, 0:width]
    for f, m in enumerate(mask):
        n = int(m.sum())
        if n >= MIN_PIXELS:
            rows.append((f, xs[m].mean(), ys[m].mean(), n))
    return np.array(rows, dtype=np.float64).reshape(-1, 4)


def _motion(track: np.ndarray) -> tuple[str | None, float, float, float]:
    """Motion from least-squares slopes of centroid and log size: translation first, then scale, else still."""
    if len(track) < 2:
        return None, 0.0, 0.0, 0.0
    frames = track[:, 0]
    span = frames.max() - frames.min()
    dx = float(np.polyfit(frames, track[:, 1], 1)[0] * span)
    dy = float(np.polyfit(frames, track[:, 2], 1)[0] * span)
    # Size ~ sqrt(area): the scale of a shape, whatever the shape.
    log_scale = float(np.polyfit(frames, 0.5 * np.log(track[:, 3]), 1)[0] * span)
    if max(abs(dx), abs(dy)) >= MOVE_MIN:
        motion = ("right" if dx > 0 else "left") if abs(dx) >= abs(dy) else ("down" if dy > 0 else "up")
    elif abs(log_scale) >= SCALE_MIN:
        motion = "grow" if log_scale > 0 else "shrink"
    else:
        motion = "still"
    return motion, dx, dy, log_scale


def _fill(mask: np.ndarray) -> float:
    """Median over frames of object pixels / bounding-box pixels."""
    fills = []
    for m in mask:
        if m.sum() < MIN_PIXELS:
            continue
        rows, cols = np.nonzero(m.any(axis=1))[0], np.nonzero(m.any(axis=0))[0]
        box = (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1)
        fills.append(m.sum() / box)
    return float(np.median(fills)) if fills else 0.0


def _shape(fill: float) -> str:
    """Square fills its box, a circle pi/4 of it, an apex-up triangle half."""
    if fill >= FILL_SQUARE:
        return "square"
    return "circle" if fill >= FILL_TRIANGLE else "triangle"


def parse_prompt(prompt: str) -> dict[str, str | None]:
    """The requested attributes named in a prompt (None where it names none)."""
    words = re.findall(r"[a-z]+", prompt.lower())
    phrases = " ".join(words)

    def first(options: Iterable[str]) -> str | None:
        return next((o for o in options if o in words), None)

    motion = next((m for m in MOTIONS if MOTION_PHRASES[m] in phrases), None)
    return {"color": first(COLORS), "shape": first(SHAPES), "motion": motion, "background": first(BACKGROUNDS)}


def score(prompt: str, video: np.ndarray) -> dict[str, Any]:
    """Per attribute: requested, detected and whether they agree; plus the detection's numbers."""
    wanted = parse_prompt(prompt)
    found = detect(video)
    seen = asdict(found)
    result: dict[str, Any] = {"prompt": prompt, "detection": seen}
    for name in ATTRIBUTES:
        result[name] = {"wanted": wanted[name], "found": seen[name], "ok": wanted[name] is not None and wanted[name] == seen[name]}
    return result


def accuracy(scores: list[dict[str, Any]]) -> dict[str, float]:
    """Fraction correct per attribute (over prompts that name it) and for all of color+shape+motion."""
    out: dict[str, float] = {}
    for name in ATTRIBUTES:
        rated = [s[name]["ok"] for s in scores if s[name]["wanted"] is not None]
        out[name] = float(np.mean(rated)) if rated else float("nan")
    out["all"] = float(np.mean([all(s[n]["ok"] for n in ("color", "shape", "motion")) for s in scores])) if scores else float("nan")
    return out


def evaluate(pipe: Any, prompts: list[str], steps: int, guidance: float, seeds: Iterable[int] = (0,), on_done: Any = None) -> dict[str, Any]:
    """Generate every prompt with every seed through a runtime Pipeline and score them."""
    scores = []
    for seed in seeds:
        for prompt in prompts:
            video = pipe(prompt, steps=steps, guidance=guidance, seed=seed)
            scores.append({**score(prompt, video), "seed": seed})
            if on_done:
                on_done(prompt)
    return {"steps": steps, "guidance": guidance, "n": len(scores), "accuracy": accuracy(scores), "scores": scores}


def object_frames(video: np.ndarray) -> list[tuple[float, float, np.ndarray] | None]:
    """Per frame: the object's centroid (x, y) in pixels and its mean RGB, or None where no object is seen."""
    hue, chroma = hue_chroma(video)
    saturated = chroma > CHROMA_MIN
    if not saturated.any():
        return [None] * len(video)
    classes = hue_class(hue)
    color_index = int(np.bincount(classes[saturated], weights=chroma[saturated], minlength=len(HUES)).argmax())
    mask = saturated & (classes == color_index)
    height, width = mask.shape[1:]
    ys, xs = np.mgrid[0:height, 0:width]
    out: list[tuple[float, float, np.ndarray] | None] = []
    for frame, m in zip(video, mask):
        n = int(m.sum())
        out.append((float(xs[m].mean()), float(ys[m].mean()), frame[m].astype(np.float64).mean(axis=0)) if n >= MIN_PIXELS else None)
    return out


def semantic_errors(video: np.ndarray, reference: np.ndarray) -> dict[str, Any]:
    """Object position error (pixels) and color error (mean |RGB| difference, 0-255) per frame against a reference.

    Tells a video that is the reference shifted by a pixel from a different video, which PSNR alone does not.
    A frame where only one of the two shows an object counts in `missing_frames` and has no position or color error.
    """
    position: list[float | None] = []
    color: list[float | None] = []
    for seen, ref in zip(object_frames(video), object_frames(reference)):
        if seen is None or ref is None:
            position.append(None if (seen is None) != (ref is None) else 0.0)
            color.append(None if (seen is None) != (ref is None) else 0.0)
            continue
        position.append(float(np.hypot(seen[0] - ref[0], seen[1] - ref[1])))
        color.append(float(np.abs(seen[2] - ref[2]).mean()))
    known_pos = [p for p in position if p is not None]
    known_col = [c for c in color if c is not None]
    return {
        "position_px_per_frame": position,
        "color_per_frame": color,
        "position_px_max": max(known_pos) if known_pos else None,
        "position_px_mean": float(np.mean(known_pos)) if known_pos else None,
        "color_max": max(known_col) if known_col else None,
        "missing_frames": sum(p is None for p in position),
    }
