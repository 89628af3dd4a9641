"""Fixed 1-D sin-cos position table, numerically identical to VideoMAE's ``get_sinusoid_encoding_table``."""

from __future__ import annotations

import torch


def sincos_table(num_positions: int, dim: int) -> torch.Tensor:
    """Return a ``(1, num_positions, dim)`` float32 table; even dims sin, odd dims cos (VideoMAE layout)."""
    position = torch.arange(num_positions, dtype=torch.float64)[:, None]
    exponent = 2 * (torch.arange(dim) // 2).to(torch.float64) / dim
    angles = position / torch.pow(torch.tensor(10000.0, dtype=torch.float64), exponent)[None]
    table = angles.clone()
    table[:, 0::2] = torch.sin(angles[:, 0::2])
    table[:, 1::2] = torch.cos(angles[:, 1::2])
    return table.to(torch.float32)[None]
