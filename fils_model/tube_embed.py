"""Tube (tubelet) embedding: a strided Conv3d turning a clip into a token sequence."""

from __future__ import annotations

import torch
from torch import nn


class TubeEmbed(nn.Module):
    """``(B, C, T, H, W)`` clip -> ``(B, N, D)`` tokens, ordered time-major then row-major (VideoMAE order)."""

    def __init__(self, in_chans: int, dim: int, tubelet_size: int, patch_size: int) -> None:
        super().__init__()
        kernel = (tubelet_size, patch_size, patch_size)
        self.proj = nn.Conv3d(in_chans, dim, kernel_size=kernel, stride=kernel)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.proj(video).flatten(2).transpose(1, 2)
