"""What the models take as video: ImageNet-normalised float ``(..., 3, T, H, W)``. Loaders hand over uint8 (a
quarter of the bytes to pin, copy and move); it is normalised here, on the model's device."""
from __future__ import annotations

import functools

import torch

from fils_model.losses.pixel import IMAGENET_MEAN, IMAGENET_STD


@functools.cache
def _statistics(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std as ``(3, 1, 1, 1)`` tensors on ``device``, made once: building them from Python lists on a GPU
    every step is a copy from pageable memory, which waits for the queued work."""
    return (torch.tensor(IMAGENET_MEAN, device=device)[:, None, None, None],
            torch.tensor(IMAGENET_STD, device=device)[:, None, None, None])


def normalise_video(video: torch.Tensor) -> torch.Tensor:
    """uint8 ``(..., 3, T, H, W)`` -> normalised float32, on ``video``'s device."""
    if video.dtype != torch.uint8:
        raise TypeError(f"normalise_video takes uint8 frames, got {video.dtype}")
    mean, std = _statistics(video.device)
    return video.float().div_(255.0).sub_(mean).div_(std)

