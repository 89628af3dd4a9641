"""ActCLIP: symmetric InfoNCE between pooled action-area tokens and the clip's caption embedding."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from fils_model.distributed import current_world, gather_with_local_grad

RELEASED_CODE_FALLBACK_TOKENS = 1536  # the released code's fallback: tokens 0..1535 (ViT-B 16x224 has 1568)


def fallback_select(select: torch.Tensor, fallback: str = "all_tokens") -> torch.Tensor:
    """``select`` with every empty row replaced by the fallback set: all tokens (D11) or, as in the released
    code (B5), the first 1536 tokens."""
    empty = ~select.any(dim=1, keepdim=True)
    if fallback == "all_tokens":
        return select | empty
    if fallback == "released_code":
        first = torch.arange(select.shape[1], device=select.device) < RELEASED_CODE_FALLBACK_TOKENS
        return select | (empty & first)
    raise ValueError(f"unknown ActCLIP fallback {fallback!r}; use all_tokens or released_code")


def pool_tokens(tokens: torch.Tensor, select: torch.Tensor, strategy: str, fallback: str = "all_tokens"
                ) -> torch.Tensor:
    """Pool ``(B, n, D)`` tokens to ``(B, D)``.

    ``patch-average``: mean over tokens with ``select`` True; ``patch``: one random selected token;
    ``average``: mean over all tokens (no action area). A clip with no selected token falls back to
    :func:`fallback_select`, so an empty action area never produces NaNs.
    """
    if strategy == "average":
        return tokens.mean(1)
    select = fallback_select(select, fallback)
    if strategy == "patch":
        index = torch.multinomial(select.float(), 1)
        return tokens.gather(1, index[..., None].expand(-1, -1, tokens.shape[-1]))[:, 0]
    if strategy == "patch-average":
        weights = select.to(tokens.dtype)[..., None]
        return (tokens * weights).sum(1) / weights.sum(1)
    raise ValueError(f"unknown ActCLIP pooling {strategy!r}; use patch-average, patch or average")


class ActCLIPLoss(nn.Module):
    """CLIP loss with learnable temperature (init 0.07, ``exp(logit_scale)`` clamped at ``max_scale``).

    Both sides are L2-normalised (D5; ``normalize=False`` keeps the released code's raw dot products, B4) and,
    when ``gather_negatives``, the batch of every rank serves as negatives; the loss is the global-batch loss,
    identical on every rank. The logits are computed in fp32 even under autocast: at a logit scale of 100, bf16
    similarities would move logits by up to ~0.4.

    Duplicate captions in a batch (automatic captions repeat word for word) are not false negatives here:
    identical text embeddings give identical logit columns, and the one-positive loss then equals multi-positive
    InfoNCE with the target spread uniformly over the same-caption clips, value and gradient
    (tests/fils_model/test_model_components.py); its floor is the log of the duplicate count, not a push between them.
    """

    def __init__(self, temperature_init: float = 0.07, max_scale: float = 100.0, gather_negatives: bool = True,
                 normalize: bool = True):
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature_init)))
        self.max_log_scale = math.log(max_scale)
        self.gather_negatives = gather_negatives
        self.normalize = normalize

    @torch.no_grad()
    def clamp_(self) -> None:
        """Call after every optimiser step (as CLIP/FILS do)."""
        self.logit_scale.clamp_(0.0, self.max_log_scale)

    def forward(self, video: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        with torch.autocast(video.device.type, enabled=False):
            video, text = video.float(), text.float()
            if self.normalize:
                video, text = F.normalize(video, dim=-1), F.normalize(text, dim=-1)
            if self.gather_negatives and current_world()[1] > 1:
                video, text = gather_with_local_grad(video), gather_with_local_grad(text)
            logits = self.logit_scale.float().exp() * video @ text.t()
            labels = torch.arange(logits.shape[0], device=logits.device)
            return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
