"""Hand-written references the model code is checked against."""
from __future__ import annotations

import torch


def rows_where(tokens: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Boolean selection of ``keep`` (B, N) positions of ``(B, N, ...)``, the same count per row, ascending: what
    the model did before it selected tokens by index."""
    return tokens[keep].reshape(tokens.shape[0], -1, *tokens.shape[2:])
