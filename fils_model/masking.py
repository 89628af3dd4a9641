"""Tube masking: one random spatial mask per clip, repeated over every time slice (VideoMAE / FILS, D8).

Masks are made on the CPU in the data loader's collate function, seeded per step and
rank, so the training step never waits on them and a resumed run draws the same masks.
"""

from __future__ import annotations

import numpy as np
import torch


def masked_tokens(grid: tuple[int, int, int], ratio: float) -> int:
    """Tokens a tube mask hides in every clip: ``int(ratio * H * W)`` patches in each of the T slices."""
    t, h, w = grid
    return t * int(ratio * h * w)


def tube_mask(batch_size: int, grid: tuple[int, int, int], ratio: float, rng: np.random.Generator) -> torch.Tensor:
    """``(batch_size, T*H*W)`` bool, True = masked; the same spatial patches in every slice (:func:`masked_tokens`)."""
    t, h, w = grid
    per_slice = h * w
    num_masked = masked_tokens(grid, ratio) // t
    order = rng.random((batch_size, per_slice)).argsort(axis=1)
    spatial = np.zeros((batch_size, per_slice), dtype=bool)
    np.put_along_axis(spatial, order[:, :num_masked], True, axis=1)
    return torch.from_numpy(np.tile(spatial, (1, t)))
