"""Feature prediction in language space: Smooth-L1 between predictions and teacher targets (I-JEPA recipe)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def language_targets(projected: torch.Tensor) -> torch.Tensor:
    """LayerNorm without affine over the text-space dimension (FILS/I-JEPA target normalisation)."""
    return F.layer_norm(projected.float(), projected.shape[-1:])


def feature_loss(pred: torch.Tensor, target: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """Mean Smooth-L1 over masked tokens and dims; ``pred[b, i]`` and ``target[b, i]`` are the same token."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} shapes differ")
    return F.smooth_l1_loss(pred.float(), target.float(), beta=beta)
