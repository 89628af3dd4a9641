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
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Top-left corner of the object over normalised time ``t`` in [0, 1]."""
    margin = size // 4
    span_x, span_y = width - size - 2 * margin, height - size - 2 * margin
    fixed_x = margin + rng.uniform(0.2, 0.8) * span_x
    fixed_y = margin + rng.uniform(0.2, 0.8) * span_y
    if motion == "left_to_right":
        return margin + t * span_x, np.full_like(t, fixed_y)
    if motion == "right_to_left":
        return margin + (1 - t) * span_x, np.full_like(t, fixed_y)
    if motion == "top_to_bottom":
        return np.full_like(t, fixed_x), margin + t * span_y
    if motion == "bottom_to_top":
        return np.full_like(t, fixed_x), margin + (1 - t) * span_y
    if motion == "circle":
        phase = rng.uniform(0, 2 * np.pi)
        return (margin + span_x / 2 + 0.45 * span_x * np.cos(phase + 2 * np.pi * t),
                margin + span_y / 2 + 0.45 * span_y * np.sin(phase + 2 * np.pi * t))
    if motion == "static":
        return np.full_like(t, fixed_x), np.full_like(t, fixed_y)
    raise ValueError(f"unknown motion {motion!r}; choose from {', '.join(MOTIONS)}")


def make_clip(motion: str, seed: int, width: int = 160, height: int = 120, frames: int = 32,
              pan_px_per_frame: float = 0.0) -> SyntheticClip:
    rng = np.random.default_rng(seed)
    size = int(min(width, height) * rng.uniform(0.28, 0.36))
    pan_total = int(np.ceil(abs(pan_px_per_frame) * frames)) + 1
    canvas = texture(rng, height, width + pan_total, cell=12)
    sprite = texture(rng, size, size, cell=4)
    sprite[::8, :] = 255 - sprite[::8, :]  # stripes: the object looks unlike the background
    t = np.linspace(0.0, 1.0, frames)
    xs, ys = _trajectory(motion, t, width, height, size, rng)
    video = np.empty((frames, height, width, 3), np.uint8)
    boxes = np.empty((frames, 4), np.float64)
    for i in range(frames):
        offset = int(round(i * abs(pan_px_per_frame)))
        cam = offset if pan_px_per_frame >= 0 else pan_total - 1 - offset
        frame = canvas[:, cam:cam + width].copy()
        x, y = int(round(xs[i])), int(round(ys[i]))
        frame[y:y + size, x:x + size] = sprite
        video[i] = frame
        boxes[i] = (x / width, y / height, (x + size) / width, (y + size) / height)
    caption = f"a striped square {MOTIONS[motion]}"
    if pan_px_per_frame:
        caption += " while the camera pans"
    return SyntheticClip(video, boxes, motion, caption)
