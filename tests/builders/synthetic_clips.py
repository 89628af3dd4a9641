"""Generated clips for tests, benchmarks and the DDP check: a textured square moving in one of four
directions over a textured background, with a per-direction random "caption embedding".

Batch ``step`` depends only on ``(seed, step)``, so a resumed or sharded run sees exactly the same data.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from fils_model.config import ModelConfig
from fils_model.losses.pixel import IMAGENET_MEAN, IMAGENET_STD
from fils_model.masking import tube_mask
from fils_model.token_index import split_tokens

DIRECTIONS = ((1, 0), (-1, 0), (0, 1), (0, -1))


def _texture(gen: torch.Generator, n: int, size: int, cells: int) -> torch.Tensor:
    """``(n, 3, size, size)`` smooth random colour texture in [0, 1]."""
    coarse = torch.rand(n, 3, cells, cells, generator=gen)
    return F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)


class SyntheticClips:
    """Deterministic batch source with the trainer's batch keys."""

    def __init__(self, cfg: ModelConfig, seed: int = 0, caption_noise: float = 0.1) -> None:
        self.cfg, self.seed, self.caption_noise = cfg, seed, caption_noise
        gen = torch.Generator().manual_seed(seed)
        self.captions = torch.randn(len(DIRECTIONS), cfg.text_dim, generator=gen)

    def batch(self, step: int, batch_size: int) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        size, frames, side = cfg.img_size, cfg.num_frames, cfg.img_size // 4
        labels = torch.randint(len(DIRECTIONS), (batch_size,), generator=gen)
        clips = _texture(gen, batch_size, size, 4)[:, :, None].repeat(1, 1, frames, 1, 1)
        checker = (torch.arange(side)[:, None] // 2 + torch.arange(side)[None] // 2) % 2  # high-contrast square
        squares = torch.rand(batch_size, 3, 1, 1, generator=gen) * checker + 0.5 * (1 - checker)
        clips = 0.3 + 0.4 * clips  # dim, smooth background
        action = torch.zeros(batch_size, *cfg.grid[1:], dtype=torch.bool)
        speed = max(1, (size - side) // frames)
        travel = speed * (frames - 1)
        for b in range(batch_size):
            dx, dy = DIRECTIONS[int(labels[b])]
            x0, y0 = (self._start(gen, d, size - side, travel) for d in (dx, dy))
            xs = [x0 + dx * speed * t for t in range(frames)]
            ys = [y0 + dy * speed * t for t in range(frames)]
            for t in range(frames):
                clips[b, :, t, ys[t] : ys[t] + side, xs[t] : xs[t] + side] = squares[b]
            p = cfg.patch_size  # action area: union box over frames, any-overlap rasterisation (D11)
            action[b, min(ys) // p : -(-(max(ys) + side) // p), min(xs) // p : -(-(max(xs) + side) // p)] = True
        mean = torch.tensor(IMAGENET_MEAN)[None, :, None, None, None]
        std = torch.tensor(IMAGENET_STD)[None, :, None, None, None]
        text = self.captions[labels] + self.caption_noise * torch.randn(batch_size, cfg.text_dim, generator=gen)
        rng = np.random.default_rng([self.seed, step])
        mask = tube_mask(batch_size, cfg.grid, cfg.mask_ratio, rng)
        visible, masked = split_tokens(mask, cfg.num_masked)  # as the pretrain loader's collate makes them
        return {
            "video": (clips - mean) / std,
            "pixels": clips,
            "mask": mask,
            "visible_index": visible,
            "masked_index": masked,
            "action_tokens": action.flatten(1).repeat(1, cfg.grid[0]),
            "text_embedding": text,
            "label": labels,
        }

    @staticmethod
    def _start(gen: torch.Generator, direction: int, span: int, travel: int) -> int:
        """Start coordinate keeping the whole path inside the frame."""
        low = travel if direction < 0 else 0
        high = span - travel if direction > 0 else span
        return int(torch.randint(low, high + 1, (1,), generator=gen))

    def stream(self, start: int, batch_size: int, rank: int = 0, world_size: int = 1) -> Iterator[dict]:
        """Global batches from ``start`` on, each cut to this rank's contiguous slice."""
        step, local = start, batch_size // world_size
        while True:
            batch = self.batch(step, batch_size)
            yield {k: v[rank * local : (rank + 1) * local] for k, v in batch.items()}
            step += 1
