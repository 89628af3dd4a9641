"""Collapse diagnostics for predictions and teacher targets (logged, never back-propagated)."""

from __future__ import annotations

import torch


@torch.no_grad()
def feature_std(x: torch.Tensor) -> torch.Tensor:
    """Mean over dimensions of the per-dimension std across all tokens; ~0 means collapse."""
    return x.reshape(-1, x.shape[-1]).float().std(dim=0).mean()


@torch.no_grad()
def effective_rank(x: torch.Tensor, max_tokens: int = 4096) -> torch.Tensor:
    """exp(entropy) of the normalised singular values of the centred token matrix (Roy & Vetterli 2007)."""
    flat = x.reshape(-1, x.shape[-1]).float()[:max_tokens]
    flat = flat - flat.mean(dim=0, keepdim=True)
    s = torch.linalg.svdvals(flat)
    p = s / s.sum().clamp_min(1e-12)
    return torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum())
