"""Deterministic test views of a clip: temporal clips spread over the video x spatial crops (docs/method.md).

Temporal: in ``stride`` sampling, windows of ``frames x stride`` evenly spaced from the first to the last
possible start (SSv2's AdaptiveTemporalCrop); in ``segment`` sampling (EK-100 TSN), the whole clip split into
``frames`` segments, view ``v`` taking the frame at fraction ``(v + 0.5) / views`` of every segment.
Spatial: the short side resized to the input size, then the centre crop (1) or left/top, centre, right/bottom (3).
"""
from __future__ import annotations

import numpy as np
import torch

from pipeline.video.clip_config import SamplingConfig
from pipeline.video.decode import resize_frames
from pipeline.video.transforms import normalise


def temporal_indices(num_frames: int, frames: int, sampling: SamplingConfig, views: int) -> list[list[int]]:
    """Frame indices of each temporal view of a clip with ``num_frames`` frames."""
    if num_frames <= 0:
        raise ValueError("clip has no frames")
    window = frames * sampling.stride
    if sampling.mode == "stride" and num_frames >= window:
        starts = np.linspace(0, num_frames - window, views).round().astype(int)
        return [[int(s) + i * sampling.stride for i in range(frames)] for s in starts]
    edges = np.linspace(0, num_frames, frames + 1)
    return [[min(num_frames - 1, int(e + (v + 0.5) / views * w)) for e, w in zip(edges[:-1], np.diff(edges))]
            for v in range(views)]


def spatial_crops(frames: np.ndarray, size: int, crops: int) -> list[np.ndarray]:
    """``(T, H, W, 3)`` -> ``crops`` arrays ``(T, size, size, 3)`` along the long side."""
    frames = resize_frames(frames, size)
    height, width = frames.shape[1:3]
    long_side = max(height, width)
    starts = [(long_side - size) // 2] if crops == 1 else [0, (long_side - size) // 2, long_side - size][:crops]
    if height >= width:
        return [np.ascontiguousarray(frames[:, s:s + size, :size]) for s in starts]
    return [np.ascontiguousarray(frames[:, :size, s:s + size]) for s in starts]


def clip_views(decode, num_frames: int, frames: int, size: int, sampling: SamplingConfig, temporal: int,
               spatial: int) -> torch.Tensor:
    """All views of one clip, ``(temporal x spatial, 3, frames, size, size)``, normalised.

    ``decode(indices)`` returns the frames at ``indices`` (one decode for the union of all views).
    """
    per_view = temporal_indices(num_frames, frames, sampling, temporal)
    wanted = sorted({i for view in per_view for i in view})
    decoded = decode(wanted)
    position = {index: row for row, index in enumerate(wanted)}
    views = []
    for indices in per_view:
        clip = decoded[[position[i] for i in indices]]
        views += [normalise(crop) for crop in spatial_crops(clip, size, spatial)]
    return torch.stack(views)
