"""VideoMAE pixel target (baseline / ablations): per-tube normalised pixels of the masked tubes."""

from __future__ import annotations

import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def unnormalise(video: torch.Tensor) -> torch.Tensor:
    """ImageNet-normalised ``(B, 3, T, H, W)`` -> [0, 1] pixels (used when the batch has no ``pixels``)."""
    mean = video.new_tensor(IMAGENET_MEAN)[None, :, None, None, None]
    std = video.new_tensor(IMAGENET_STD)[None, :, None, None, None]
    return video * std + mean


def tube_pixels(pixels: torch.Tensor, tubelet: int, patch: int, normalise: bool = True) -> torch.Tensor:
    """``(B, C, T, H, W)`` -> ``(B, N, tubelet*patch*patch*C)`` in HF VideoMAE's ordering.

    With ``normalise`` every tube is standardised per channel (unbiased std, eps 1e-6), VideoMAE's target.
    """
    if pixels.dtype == torch.uint8:
        pixels = pixels.float() / 255.0
    b, c, t, h, w = pixels.shape
    x = pixels.float().reshape(b, c, t // tubelet, tubelet, h // patch, patch, w // patch, patch)
    x = x.permute(0, 2, 4, 6, 3, 5, 7, 1).reshape(b, -1, tubelet * patch * patch, c)
    if normalise:
        x = (x - x.mean(dim=-2, keepdim=True)) / (x.var(dim=-2, unbiased=True, keepdim=True).sqrt() + 1e-6)
    return x.flatten(2)


def pixel_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE over masked tubes; rows paired like the feature loss."""
    return F.mse_loss(pred.float(), target.float())
