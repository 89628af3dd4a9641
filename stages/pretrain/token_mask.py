"""Action box -> boolean mask over the ViT's space-time tokens, after the crop and flip the loader applied.

The rule is any-overlap (docs/method.md D11): a patch is inside when it shares a positive area with the box, i.e.
columns ``floor(x1 / p) .. ceil(x2 / p) - 1`` inclusive. The reference's ``ceil - 2`` dropped the last
overlapped column and row (bug B5); ``rule="released_code"`` reproduces it, and leaves an empty mask empty so
that the model's released-code fallback applies. With no usable box every token is inside, so ActCLIP degrades
to average pooling over the whole clip rather than over nothing.
"""
from __future__ import annotations

import math
from typing import Literal, Sequence

import numpy as np

FULL_FRAME = (0.0, 0.0, 1.0, 1.0)
_EPS = 1e-9  # a box edge exactly on a patch edge must not leak into the next patch through rounding
BoxRule = Literal["any_overlap", "released_code"]


def token_mask(box: Sequence[float] | None, input_size: int | tuple[int, int], patch_size: int, num_frames: int,
               tubelet_size: int, crop: Sequence[float] = FULL_FRAME, flip: bool = False,
               rule: BoxRule = "any_overlap") -> np.ndarray:
    """Tokens of a ``num_frames`` clip that overlap ``box``: bool ``(T/tubelet * H/patch * W/patch,)`` in the
    encoder's (time, row, column) order; the box is static over the clip, so every time slice is the same.

    ``box`` and ``crop`` are normalised ``(x1, y1, x2, y2)`` in the stored clip frame; ``crop`` is the region
    that was resized to ``input_size`` (``(H, W)`` or square), ``flip`` a horizontal flip applied after it.
    ``box=None``, a degenerate box or one outside the crop selects every token.
    """
    height, width = (input_size, input_size) if isinstance(input_size, int) else input_size
    if height % patch_size or width % patch_size:
        raise ValueError(f"input_size {height}x{width} is not a multiple of patch_size {patch_size}")
    if num_frames % tubelet_size:
        raise ValueError(f"num_frames {num_frames} is not a multiple of tubelet_size {tubelet_size}")
    cx1, cy1, cx2, cy2 = crop
    if cx2 <= cx1 or cy2 <= cy1:
        raise ValueError(f"crop {tuple(crop)} is empty; expected normalised (x1, y1, x2, y2) with x2 > x1, y2 > y1")
    rows, cols = height // patch_size, width // patch_size
    grid = np.zeros((rows, cols), bool)
    if box is not None:
        x1, x2 = (np.clip([(box[0] - cx1) / (cx2 - cx1), (box[2] - cx1) / (cx2 - cx1)], 0, 1) * width).tolist()
        y1, y2 = (np.clip([(box[1] - cy1) / (cy2 - cy1), (box[3] - cy1) / (cy2 - cy1)], 0, 1) * height).tolist()
        if flip:
            x1, x2 = width - x2, width - x1
        if x2 > x1 and y2 > y1:
            c0, c1 = math.floor(x1 / patch_size + _EPS), math.ceil(x2 / patch_size - _EPS)
            r0, r1 = math.floor(y1 / patch_size + _EPS), math.ceil(y2 / patch_size - _EPS)
            if rule == "released_code":
                c1, r1 = c1 - 1, r1 - 1
            grid[r0:r1, c0:c1] = True
    if not grid.any() and (box is None or rule == "any_overlap"):
        grid[:] = True
    return np.tile(grid.reshape(-1), num_frames // tubelet_size)
