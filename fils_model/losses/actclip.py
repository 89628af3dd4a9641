"""ActCLIP: symmetric InfoNCE between pooled action-area tokens and the clip's caption embedding."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from fils_model.distributed import current_world, gather_with_local_grad


def pool_tokens(tokens: torch.Tensor, select: torch.Tensor, strategy: str) -> torch.Tensor:
    """Pool ``(B, n, D)`` tokens to ``(B, D)``.

    ``patch-average``: mean over tokens with ``select`` True; ``patch``: one random selected token;
    ``average``: mean over all tokens (no action area). A clip with no selected token falls back to all of
    its tokens (D11), so an empty action area never produces NaNs.
    """
    if strategy == "average":
        return tokens.mean(1)
    select = select | ~select.any(dim=1, keepdim=True)
    if strategy == "patch":
        index = torch.multinomial(select.float(), 1)
        return tokens.gather(1, index[..., None].expand(-1, -1, tokens.shape[-1]))[:, 0]
    if strategy == "patch-average":
        weights = select.to(tokens.dtype)[..., None]
        return (tokens * weights).sum(1) / weights.sum(1)
    raise ValueError(f"unknown ActCLIP pooling {strategy!r}; use patch-average, patch or average")


class ActCLIPLoss(nn.Module):
    """CLIP loss with learnable temperature (init 0.07, ``exp(logit_scale)`` clamped at ``max_scale``).

    Both sides are L2-normalised (D5) and, when ``gather_negatives``, the batch of every rank serves as
    negatives; the loss is the global-batch loss, identical on every rank.

    Duplicate captions in a batch (automatic captions repeat word for word) are not false negatives here:
    identical text embeddings give identical logit columns, and the one-positive loss then equals multi-positive
    InfoNCE with the target spread uniformly over the same-caption clips, value and gradient
    (tests/test_model_components.py); its floor is the log of the duplicate count, not a push between them.
    """

    def __init__(self, temperature_init: float = 0.07, max_scale: float = 100.0, gather_negatives: bool = True):
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature_init)))
        self.max_log_scale = math.log(max_scale)
        self.gather_negatives = gather_negatives

    @torch.no_grad()
    def clamp_(self) -> None:
        """Call after every optimiser step (as CLIP/FILS do)."""
        self.logit_scale.clamp_(0.0, self.max_log_scale)

    def forward(self, video: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        video = F.normalize(video.float(), dim=-1)
        text = F.normalize(text.float(), dim=-1)
        if self.gather_negatives and current_world()[1] > 1:
            video, text = gather_with_local_grad(video), gather_with_local_grad(text)
        logits = self.logit_scale.exp() * video @ text.t()
        labels = torch.arange(logits.shape[0], device=logits.device)
        return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
