"""Action box -> token mask of the video transformer (D11: a token belongs to the action area when its patch
overlaps the box at all; the reference's "fully included" rule drops the last overlapped row/column, B5)."""
from __future__ import annotations

import math

import numpy as np

Box = tuple[float, float, float, float]  # x1, y1, x2, y2 normalised to the (cropped) model input


def _span(low: float, high: float, cells: int) -> slice:
    # Rounded first, so a box edge that lies on a patch border (up to float error) takes no extra patch.
    start = math.floor(round(low * cells, 6))
    stop = math.ceil(round(high * cells, 6))
    return slice(max(0, start), min(cells, max(stop, start)))


def token_mask(box: Box, input_size: int, patch_size: int, num_frames: int, tubelet_size: int) -> np.ndarray:
    """Bool ``(T/tubelet * (S/patch)^2,)`` in the encoder's (time, row, column) order; the box is static over
    time (one union box per clip), so every time slice repeats the same spatial mask."""
    side = input_size // patch_size
    spatial = np.zeros((side, side), dtype=bool)
    x1, y1, x2, y2 = box
    if x2 > x1 and y2 > y1:
        spatial[_span(y1, y2, side), _span(x1, x2, side)] = True
    return np.tile(spatial.reshape(-1), num_frames // tubelet_size)
