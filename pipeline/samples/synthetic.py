"""Procedurally generated clips with known ground truth: a textured object moving over a textured
background, optionally with the camera panning. The class is the motion type; the true box of the object
in every frame is known exactly, which is what the optical-flow stage is validated against."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# Caption phrases: a true description of each motion (image x grows eastward/right, y downward), worded so a
# sentence encoder separates them. "moving from left to right" and "... right to left" embed at cosine 0.999 in
# MiniLM (0.997 for top/bottom): ActCLIP could then only tell horizontal / vertical / circle apart, and same-axis
# clips in a batch became false negatives. With these phrases the pairwise MiniLM cosine of the full captions
# ("a striped square ...") is at most 0.76 (benchmarks/bench_learning_check.py --caption-table prints it).
MOTIONS = {
    "left_to_right": "drifting east",
    "right_to_left": "retreating westward",
    "top_to_bottom": "sinking downwards",
    "bottom_to_top": "climbing upwards",
    "circle": "orbiting around in a loop",
    "static": "standing still",
}
DEFAULT_CLASSES = ("left_to_right", "right_to_left", "top_to_bottom", "bottom_to_top", "circle")

# Independent factors of a clip's look (``Look``): each drawn on its own, so a probe of one factor (motion, speed)
# cannot read it off another (colour, shape, background).
SHAPES = ("square", "disc", "diamond")
COLOURS = {"red": (220, 40, 40), "green": (40, 190, 60), "blue": (50, 80, 230), "yellow": (235, 210, 40),
           "purple": (150, 60, 200)}
SPEEDS = {"slow": 0.5, "fast": 1.0}  # fraction of the free span the object travels over the clip
BACKGROUNDS = {"coarse": 12, "fine": 5}  # texture cell size of the background
TINT = 0.8  # weight of the object's colour over its texture


@dataclass(frozen=True)
class Look:
    shape: str
    colour: str
    speed: str
    background: str

    @staticmethod
    def draw(rng: np.random.Generator) -> "Look":
        return Look(str(rng.choice(SHAPES)), str(rng.choice(list(COLOURS))), str(rng.choice(list(SPEEDS))),
                    str(rng.choice(list(BACKGROUNDS))))


@dataclass
class SyntheticClip:
    frames: np.ndarray  # (T, H, W, 3) uint8 RGB
    boxes: np.ndarray  # (T, 4) float, normalised x1, y1, x2, y2 of the object in each frame
    motion: str
    caption: str


def texture(rng: np.random.Generator, height: int, width: int, cell: int) -> np.ndarray:
    """Smooth coloured blobs plus fine grain: enough structure for optical flow to lock on to."""
    coarse = rng.integers(0, 256, (max(2, height // cell), max(2, width // cell), 3), dtype=np.uint8)
    smooth = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC).astype(np.int16)
    grain = rng.integers(-25, 26, (height, width, 3), dtype=np.int16)
    return np.clip(smooth + grain, 0, 255).astype(np.uint8)


def _trajectory(motion: str, t: np.ndarray, width: int, height: int, size: int,
                rng: np.random.Generator, travel: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Top-left corner of the object over normalised time ``t`` in [0, 1]; ``travel`` < 1 covers that fraction
    of the free span from a random start (a slower object), or of the loop."""
    margin = size // 4
    span_x, span_y = width - size - 2 * margin, height - size - 2 * margin
    fixed_x = margin + rng.uniform(0.2, 0.8) * span_x
    fixed_y = margin + rng.uniform(0.2, 0.8) * span_y
    if travel < 1.0:
        start_x, start_y = (margin + rng.uniform(0, 1 - travel) * span for span in (span_x, span_y))
    else:
        start_x, start_y = margin, margin
    if motion == "left_to_right":
        return start_x + t * travel * span_x, np.full_like(t, fixed_y)
    if motion == "right_to_left":
        return start_x + (1 - t) * travel * span_x, np.full_like(t, fixed_y)
    if motion == "top_to_bottom":
        return np.full_like(t, fixed_x), start_y + t * travel * span_y
    if motion == "bottom_to_top":
        return np.full_like(t, fixed_x), start_y + (1 - t) * travel * span_y
    if motion == "circle":
        phase = rng.uniform(0, 2 * np.pi)
        turn = 2 * np.pi * travel
        return (margin + span_x / 2 + 0.45 * span_x * np.cos(phase + turn * t),
                margin + span_y / 2 + 0.45 * span_y * np.sin(phase + turn * t))
    if motion == "static":
        return np.full_like(t, fixed_x), np.full_like(t, fixed_y)
    raise ValueError(f"unknown motion {motion!r}; choose from {', '.join(MOTIONS)}")


PAN_CAPTION = " while the camera pans"  # appended to the caption of a clip with a panning camera
STRIPED_SQUARE = Look("square", "striped", "fast", "coarse")  # how a clip made without a look is described


def _shape_mask(shape: str, size: int) -> np.ndarray:
    centre = (size - 1) / 2
    y, x = np.mgrid[:size, :size]
    if shape == "square":
        return np.ones((size, size), bool)
    if shape == "disc":
        return (x - centre) ** 2 + (y - centre) ** 2 <= (size / 2) ** 2
    if shape == "diamond":
        return np.abs(x - centre) + np.abs(y - centre) <= size / 2
    raise ValueError(f"unknown shape {shape!r}; choose from {', '.join(SHAPES)}")


def make_clip(motion: str, seed: int, width: int = 160, height: int = 120, frames: int = 32,
              pan_px_per_frame: float = 0.0, look: Look | None = None,
              background_contrast: float = 1.0) -> SyntheticClip:
    """One clip; without ``look`` the object is a striped textured square crossing the whole frame.
    ``background_contrast`` < 1 fades the background's texture towards mid grey: the object stands out, so the
    motion is learnable from a few hundred clips (every clip's background is unique, and a full-contrast one is what
    a small encoder memorises first)."""
    if not 0.0 <= background_contrast <= 1.0:
        raise ValueError(f"background contrast must be in [0, 1], got {background_contrast}")
    rng = np.random.default_rng(seed)
    size = int(min(width, height) * rng.uniform(0.28, 0.36))
    pan_total = int(np.ceil(abs(pan_px_per_frame) * frames)) + 1
    canvas = texture(rng, height, width + pan_total, cell=12 if look is None else BACKGROUNDS[look.background])
    if background_contrast < 1.0:
        canvas = np.clip(128 + (canvas.astype(np.float32) - 128) * background_contrast, 0, 255).astype(np.uint8)
    sprite = texture(rng, size, size, cell=4)
    sprite[::8, :] = 255 - sprite[::8, :]  # stripes: the object looks unlike the background
    inside = np.ones((size, size), bool)
    if look is not None:  # tinted towards its colour, cut to its shape (the background shows around it)
        sprite = ((1 - TINT) * sprite + TINT * np.array(COLOURS[look.colour])).astype(np.uint8)
        inside = _shape_mask(look.shape, size)
    t = np.linspace(0.0, 1.0, frames)
    xs, ys = _trajectory(motion, t, width, height, size, rng, 1.0 if look is None else SPEEDS[look.speed])
    video = np.empty((frames, height, width, 3), np.uint8)
    boxes = np.empty((frames, 4), np.float64)
    for i in range(frames):
        offset = int(round(i * abs(pan_px_per_frame)))
        cam = offset if pan_px_per_frame >= 0 else pan_total - 1 - offset
        frame = canvas[:, cam:cam + width].copy()
        x, y = int(round(xs[i])), int(round(ys[i]))
        patch = frame[y:y + size, x:x + size]
        patch[inside] = sprite[inside]
        video[i] = frame
        boxes[i] = (x / width, y / height, (x + size) / width, (y + size) / height)
    caption = f"a striped square {MOTIONS[motion]}" if look is None else f"a {look.colour} {look.shape} {MOTIONS[motion]}"
    if pan_px_per_frame:
        caption += PAN_CAPTION
    return SyntheticClip(video, boxes, motion, caption)
