"""Per-clip transforms with an explicit numpy RNG, so a sample's augmentation depends only on its seed.

The crop and flip are drawn once and applied to both the frames and the action box, which keeps the box on the
pixels it marked; torchvision's ``RandomResizedCrop.get_params`` is followed but drawn from ``rng``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from fils_model.video_input import normalise_video
from pipeline.video.clip_config import AugmentConfig, SamplingConfig
from pipeline.video.decode import uniform_indices

Box = tuple[float, float, float, float]  # x1, y1, x2, y2 normalised to [0, 1]
CENTRE_BOX: Box = (0.25, 0.25, 0.75, 0.75)


def frame_indices(num_frames: int, count: int, cfg: SamplingConfig, rng: np.random.Generator) -> list[int]:
    """``count`` frame indices of a clip of ``num_frames`` frames (stride window or TSN segments)."""
    window = count * cfg.stride
    if cfg.mode == "stride" and num_frames >= window:
        start = int(rng.integers(0, num_frames - window + 1))
        offsets = rng.integers(0, cfg.stride, count) if cfg.jitter else np.zeros(count, int)
        return [start + i * cfg.stride + int(o) for i, o in enumerate(offsets)]
    if not cfg.jitter:
        return uniform_indices(num_frames, count)
    edges = np.linspace(0, num_frames, count + 1)
    picks = edges[:-1] + rng.random(count) * np.diff(edges)
    return [min(num_frames - 1, int(p)) for p in picks]


@dataclass(frozen=True)
class CropFlip:
    """A crop of the stored frame (pixels, end exclusive) resized to a square, then optionally flipped."""

    x1: int
    y1: int
    x2: int
    y2: int
    flip: bool


def random_crop_flip(width: int, height: int, cfg: AugmentConfig, rng: np.random.Generator) -> CropFlip:
    """RandomResizedCrop parameters (10 tries, then a centre crop with the ratio clamped) and a flip."""
    area = width * height
    log_ratio = (math.log(cfg.ratio[0]), math.log(cfg.ratio[1]))
    flip = bool(cfg.flip and rng.random() < 0.5)
    for _ in range(10):
        target = area * rng.uniform(*cfg.scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            x, y = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
            return CropFlip(x, y, x + w, y + h, flip)
    aspect = width / height
    w, h = width, height
    if aspect < cfg.ratio[0]:
        h = round(width / cfg.ratio[0])
    elif aspect > cfg.ratio[1]:
        w = round(height * cfg.ratio[1])
    x, y = (width - w) // 2, (height - h) // 2
    return CropFlip(x, y, x + w, y + h, flip)


def apply_crop_flip(frames: np.ndarray, crop: CropFlip, size: int) -> np.ndarray:
    """``(T, H, W, 3)`` uint8 -> ``(T, size, size, 3)`` uint8: the crop resized by antialiased bilinear
    interpolation (torchvision's RandomResizedCrop default; torch's uint8 kernel on all frames at once, 5x faster
    than OpenCV's area filter at the non-integer factors random crops have), then flipped."""
    cut = torch.from_numpy(frames[:, crop.y1 : crop.y2, crop.x1 : crop.x2]).permute(0, 3, 1, 2)
    out = F.interpolate(cut, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    out = out.permute(0, 2, 3, 1).contiguous().numpy()  # channels last in memory already: no copy
    if crop.flip:  # every row of every frame, in place: one OpenCV call on a (T x size) x size image
        rows = out.reshape(-1, size, out.shape[3])
        cv2.flip(rows, 1, dst=rows)
    return out


def crop_box(box: Box, crop: CropFlip, width: int, height: int) -> Box:
    """A normalised box of the stored frame in the normalised coordinates of the cropped, flipped output."""
    cw, ch = crop.x2 - crop.x1, crop.y2 - crop.y1
    x1, x2 = (min(1.0, max(0.0, (v * width - crop.x1) / cw)) for v in (box[0], box[2]))
    y1, y2 = (min(1.0, max(0.0, (v * height - crop.y1) / ch)) for v in (box[1], box[3]))
    return (1.0 - x2, y1, 1.0 - x1, y2) if crop.flip else (x1, y1, x2, y2)


def normalise(frames: np.ndarray) -> torch.Tensor:
    """``(T, H, W, 3)`` uint8 -> ImageNet-normalised float ``(3, T, H, W)``."""
    return normalise_video(torch.from_numpy(frames).permute(3, 0, 1, 2)).contiguous()
