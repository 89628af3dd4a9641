"""Tube masking: one random spatial mask per clip, repeated over every time slice (VideoMAE / FILS, D8).

Masks are made on the CPU in the data loader's collate function so the training step never waits on them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import default_collate, get_worker_info


def tube_mask(batch_size: int, grid: tuple[int, int, int], ratio: float, rng: np.random.Generator) -> torch.Tensor:
    """``(batch_size, T*H*W)`` bool, True = masked; exactly ``int(ratio*H*W)`` patches masked per slice."""
    t, h, w = grid
    per_slice = h * w
    num_masked = int(ratio * per_slice)
    order = rng.random((batch_size, per_slice)).argsort(axis=1)
    spatial = np.zeros((batch_size, per_slice), dtype=bool)
    np.put_along_axis(spatial, order[:, :num_masked], True, axis=1)
    return torch.from_numpy(np.tile(spatial, (1, t)))


class TubeMaskGenerator:
    """Seeded, picklable mask source; each DataLoader worker derives its own stream from ``seed`` and its id."""

    def __init__(self, grid: tuple[int, int, int], ratio: float = 0.9, seed: int = 0) -> None:
        self.grid = grid
        self.ratio = ratio
        self.seed = seed
        self._rng: np.random.Generator | None = None

    def __call__(self, batch_size: int) -> torch.Tensor:
        if self._rng is None:
            worker = get_worker_info()
            self._rng = np.random.default_rng([self.seed, worker.id if worker else 0])
        return tube_mask(batch_size, self.grid, self.ratio, self._rng)


class MaskingCollate:
    """``collate_fn`` stacking sample dicts and adding a fresh ``mask`` (B, N) tube mask."""

    def __init__(self, generator: TubeMaskGenerator) -> None:
        self.generator = generator

    def __call__(self, samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        batch = default_collate(list(samples))
        batch["mask"] = self.generator(len(samples))
        return batch
