"""Token selection by index tensors: which tokens of a clip are visible and which masked, as ``(B, n)`` positions.

Boolean indexing (``tokens[mask]``) makes the output shape depend on the data: on a GPU every call waits for the
device to count the True entries, and ``torch.compile`` cannot trace it without a graph break. With tube masking
every clip masks the same number of tokens (``ModelConfig.num_masked``), so the split is two index tensors of
fixed shape, made once per batch (in the loader's collate, or here from the mask by a stable sort on the device)
and applied with ``gather``.
"""
from __future__ import annotations

from typing import NamedTuple

import torch


class TokenSplit(NamedTuple):
    """Ascending positions of the visible ``(B, N - num_masked)`` and masked ``(B, num_masked)`` tokens."""

    visible: torch.Tensor
    masked: torch.Tensor


def split_tokens(mask: torch.Tensor, num_masked: int) -> TokenSplit:
    """The split of a ``(B, N)`` bool mask (True = masked) with exactly ``num_masked`` True per row.

    A stable sort puts the visible positions first, each part in ascending order, without a host sync. A mask on
    the CPU (the loader's collate) is checked for the count; on the device that check would be the sync avoided.
    """
    if mask.device.type == "cpu" and (counts := mask.sum(dim=1)).ne(num_masked).any():
        raise ValueError(f"every clip must mask exactly {num_masked} tokens; got {sorted(set(counts.tolist()))}")
    order = torch.argsort(mask.to(torch.uint8), dim=1, stable=True)
    visible = mask.shape[1] - num_masked
    return TokenSplit(order[:, :visible], order[:, visible:])


def gather_tokens(tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``tokens[b, index[b, i], ...]`` as ``(B, n, ...)`` for ``(B, N, ...)`` tokens and ``(B, n)`` positions."""
    trailing = tokens.shape[2:]
    expanded = index.reshape(*index.shape, *(1,) * len(trailing)).expand(*index.shape, *trailing)
    return tokens.gather(1, expanded)
