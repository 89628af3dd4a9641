"""Attentive probe on frozen tokens (the V-JEPA evaluation protocol): a learnable query cross-attends over an
encoder's output tokens, a residual MLP refines the pooled vector, and a linear layer classifies it.

Mean pooling (the linear probe) averages away *where* and *when* things happen; a motion that is visible only in
some tokens survives attentive pooling. Only the probe trains; the tokens are computed once and cached.
"""
from __future__ import annotations

import torch
from timm.layers import Mlp, trunc_normal_
from torch import nn

from fils_model.finetune_config import FinetuneRecipe
from fils_model.optim import build_optimizer, build_scheduler


class AttentiveProbe(nn.Module):
    """``forward(tokens (B, N, D)) -> logits (B, classes)``."""

    def __init__(self, dim: int, num_classes: int, num_heads: int = 4) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.zeros(1, 1, dim))
        self.norm_tokens = nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.norm_pooled = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, 4 * dim)
        self.head = nn.Linear(dim, num_classes)
        trunc_normal_(self.query, std=0.02)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        keys = self.norm_tokens(tokens)
        pooled = self.attention(self.query.expand(len(tokens), -1, -1), keys, keys, need_weights=False)[0]
        pooled = pooled + self.mlp(self.norm_pooled(pooled))
        return self.head(pooled[:, 0])


def train_attentive_probe(tokens: torch.Tensor, labels: torch.Tensor, recipe: FinetuneRecipe) -> AttentiveProbe:
    """Train a probe on cached ``tokens`` with the linear probe's optimiser and schedule (``recipe``: AdamW,
    warm-up + cosine, batch ``global_batch_size``, ``total_steps``); returns it in eval mode."""
    torch.manual_seed(recipe.seed)
    probe = AttentiveProbe(tokens.shape[-1], recipe.head.num_classes)
    optimizer = build_optimizer(probe, recipe.optim, recipe.global_batch_size)
    scheduler = build_scheduler(optimizer, recipe.optim, recipe.total_steps, recipe.warmup_steps,
                                recipe.global_batch_size)
    generator = torch.Generator().manual_seed(recipe.seed)
    batch = min(recipe.global_batch_size, len(tokens))
    probe.train()
    for step in range(recipe.total_steps):
        scheduler.step_update(step)
        index = torch.randperm(len(tokens), generator=generator)[:batch]
        loss = nn.functional.cross_entropy(probe(tokens[index]), labels[index],
                                           label_smoothing=recipe.mix.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return probe.eval()
