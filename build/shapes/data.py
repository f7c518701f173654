"""Synthetic text-to-video data: one colored shape moving on a plain background, with its caption.

Everything is deterministic from a seed (numpy only, no downloads). Colors are six hues 60 degrees
apart and backgrounds are grays, so the analytic evaluator can tell object from background by chroma
and name the color by hue. A fixed set of (color, shape, motion) triples is held out of training to
measure whether the model composes attributes it has only seen apart.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

FRAMES, SIZE = 8, 64

# name -> RGB; hues at 0, 60, ..., 300 degrees so that hue sectors classify them.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (225, 35, 35),
    "yellow": (230, 220, 30),
    "green": (35, 200, 50),
    "cyan": (30, 205, 215),
    "blue": (45, 60, 230),
    "magenta": (215, 40, 215),
}
SHAPES = ("circle", "square", "triangle")
MOTIONS = ("left", "right", "up", "down", "still", "grow", "shrink")
BACKGROUNDS: dict[str, int] = {"dark": 25, "gray": 120, "light": 215}  # gray level

MOTION_PHRASES = {
    "left": "moving left",
    "right": "moving right",
    "up": "moving up",
    "down": "moving down",
    "still": "standing still",
    "grow": "growing",
    "shrink": "shrinking",
}

# (vx, vy) unit direction in image coordinates (y grows downwards).
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
TRAVEL = (24.0, 32.0)  # pixels over the clip for the four translations
SIZE_RANGE = (16.0, 22.0)  # object side / diameter for non-scaling motions
SCALE_RANGE = (11.0, 28.0)  # size at the small and large end of grow/shrink


@dataclass(frozen=True)
class ClipSpec:
    """Everything that determines one clip: the captioned attributes and the nuisance ones."""

    color: str
    shape: str
    motion: str
    background: str
    x0: float  # center at the first frame, pixels
    y0: float
    size0: float  # size at the first and last frame
    size1: float
    dx: float  # total displacement over the clip
    dy: float
    color_jitter: tuple[int, int, int] = (0, 0, 0)
    background_jitter: int = 0

    @property
    def triple(self) -> tuple[str, str, str]:
        """The (color, shape, motion) combination this clip shows."""
        return (self.color, self.shape, self.motion)


def caption(color: str, shape: str, motion: str, background: str) -> str:
    """The training caption, e.g. 'a red circle moving left on a dark background'."""
    return f"a {color} {shape} {MOTION_PHRASES[motion]} on a {background} background"


def spec_caption(spec: ClipSpec) -> str:
    """The caption of a clip spec."""
    return caption(spec.color, spec.shape, spec.motion, spec.background)


def all_triples() -> list[tuple[str, str, str]]:
    """Every (color, shape, motion) combination, in a fixed order."""
    return list(itertools.product(COLORS, SHAPES, MOTIONS))


def is_held_out(color: str, shape: str, motion: str) -> bool:
    """One motion in seven per (color, shape) pair is held out; 3 is invertible mod 7, so exactly one is."""
    c, s, m = list(COLORS).index(color), SHAPES.index(shape), MOTIONS.index(motion)
    return (c + 2 * s + 3 * m) % 7 == 0


def train_triples() -> list[tuple[str, str, str]]:
    """The 108 combinations the model is trained on."""
    return [t for t in all_triples() if not is_held_out(*t)]


def held_out_triples() -> list[tuple[str, str, str]]:
    """The 18 combinations never shown in training (every color, shape and motion still is)."""
    return [t for t in all_triples() if is_held_out(*t)]


def prompt_set(name: str) -> list[str]:
    """Evaluation prompts: 'heldout' (18 unseen triples x 3 backgrounds) or 'train' (one background per triple)."""
    if name == "heldout":
        return [caption(*t, bg) for t in held_out_triples() for bg in BACKGROUNDS]
    if name == "train":
        backgrounds = list(BACKGROUNDS)
        return [caption(*t, backgrounds[i % len(backgrounds)]) for i, t in enumerate(train_triples())]
    raise ValueError(f"unknown prompt set {name!r}: use 'heldout' or 'train'")


def all_captions() -> list[str]:
    """Every caption the data can produce (train and held-out), for caching text embeddings."""
    return [caption(*t, bg) for t in all_triples() for bg in BACKGROUNDS]


def random_spec(
    rng: np.random.Generator, triple: tuple[str, str, str] | None = None, background: str | None = None, jitter: float | None = None
) -> ClipSpec:
    """A random clip of a training triple (or the given one), placed so the object stays in frame.

    jitter=None places the object anywhere (varied frames, for the VAE); a number keeps it within that
    many pixels of the motion's canonical path, so that a caption fixes the video up to small changes,
    which a tiny denoiser learns in minutes rather than hours.
    """
    triples = train_triples()
    color, shape, motion = triple or triples[rng.integers(len(triples))]
    background = background or list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]
    if motion in ("grow", "shrink"):
        small, large = rng.uniform(SCALE_RANGE[0], SCALE_RANGE[0] + 3), rng.uniform(SCALE_RANGE[1] - 3, SCALE_RANGE[1])
        size0, size1 = (small, large) if motion == "grow" else (large, small)
        dx = dy = 0.0
    else:
        size0 = size1 = rng.uniform(*SIZE_RANGE)
        vx, vy = DIRECTIONS.get(motion, (0, 0))
        travel = rng.uniform(*TRAVEL)
        dx, dy = vx * travel, vy * travel
    half = max(size0, size1) / 2 + 2  # margin: the object never touches the border
    x_lo, x_hi = half + max(0.0, -dx), SIZE - half - max(0.0, dx)
    y_lo, y_hi = half + max(0.0, -dy), SIZE - half - max(0.0, dy)
    if jitter is not None:  # the canonical path is centered in the frame
        x_mid, y_mid = (SIZE - dx) / 2, (SIZE - dy) / 2
        x_lo, x_hi = max(x_lo, x_mid - jitter), min(x_hi, x_mid + jitter)
        y_lo, y_hi = max(y_lo, y_mid - jitter), min(y_hi, y_mid + jitter)
    x0, y0 = rng.uniform(x_lo, x_hi), rng.uniform(y_lo, y_hi)
    color_jitter = tuple(int(v) for v in rng.integers(-15, 16, size=3))
    return ClipSpec(
        color,
        shape,
        motion,
        background,
        float(x0),
        float(y0),
        float(size0),
        float(size1),
        float(dx),
        float(dy),
        color_jitter,
        int(rng.integers(-10, 11)),
    )  # type: ignore[arg-type]


def shape_mask(shape: str, cx: float, cy: float, size: float, supersample: int = 4) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] (SIZE x SIZE) of a shape centered at (cx, cy)."""
    n = SIZE * supersample
    coords = (np.arange(n, dtype=np.float32) + 0.5) / supersample
    x, y = coords[None, :] - cx, coords[:, None] - cy
    r = size / 2
    if shape == "circle":
        inside = x * x + y * y <= r * r
    elif shape == "square":
        inside = (np.abs(x) <= r) & (np.abs(y) <= r)
    elif shape == "triangle":  # apex up, base at the bottom: width = height = size
        inside = (y <= r) & (y >= -r) & (np.abs(x) <= (y + r) / 2)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return inside.reshape(SIZE, supersample, SIZE, supersample).mean(axis=(1, 3)).astype(np.float32)


def render(spec: ClipSpec, frames: int = FRAMES) -> np.ndarray:
    """uint8 (F, 64, 64, 3): the object moving (or scaling) linearly from its first to its last state."""
    bg = np.full(3, BACKGROUNDS[spec.background] + spec.background_jitter, dtype=np.float32)
    fg = np.clip(np.array(COLORS[spec.color], dtype=np.float32) + np.array(spec.color_jitter), 0, 255)
    video = np.empty((frames, SIZE, SIZE, 3), dtype=np.uint8)
    for f in range(frames):
        t = f / (frames - 1)
        size = spec.size0 + t * (spec.size1 - spec.size0)
        alpha = shape_mask(spec.shape, spec.x0 + t * spec.dx, spec.y0 + t * spec.dy, size)[..., None]
        video[f] = np.clip(bg * (1 - alpha) + fg * alpha, 0, 255).round().astype(np.uint8)
    return video


def sample_clips(seed: int, count: int, jitter: float | None = None) -> tuple[list[ClipSpec], np.ndarray]:
    """`count` random training clips from `seed`: their specs and uint8 (N, F, 64, 64, 3) videos."""
    rng = np.random.default_rng(seed)
    specs = [random_spec(rng, jitter=jitter) for _ in range(count)]
    return specs, np.stack([render(s) for s in specs])
