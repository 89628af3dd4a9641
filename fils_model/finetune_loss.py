"""Targets and loss of the classification heads.

Every head's target is made dense (one-hot or multi-hot) and the heads are concatenated, so one timm ``Mixup``
call (multi-label mode, which mixes dense targets with the same lambda and pairing as the clips) serves the
single-label, EPIC verb+noun and Charades heads alike; label smoothing is applied per softmax head afterwards,
which equals timm's smoothed one-hot targets because mixing is linear.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.loss import SoftTargetCrossEntropy

from fils_model.finetune_config import HeadConfig

_SOFT_CE = SoftTargetCrossEntropy()


def target_key(head_name: str) -> str:
    """Batch key of a head's target: class index ``(B,)`` or multi-hot ``(B, K)``."""
    return f"target_{head_name}"


def dense_targets(batch: dict[str, torch.Tensor], head: HeadConfig) -> torch.Tensor:
    """``(B, sum of head widths)`` float targets."""
    parts = []
    for name, width in head.outputs().items():
        target = batch[target_key(name)]
        parts.append(target.float() if head.task == "multi_label" else F.one_hot(target.long(), width).float())
    return torch.cat(parts, dim=1)


def classification_loss(logits: dict[str, torch.Tensor], targets: torch.Tensor, head: HeadConfig,
                        smoothing: float) -> torch.Tensor:
    """Sum over heads: soft-target cross-entropy (BCE for the multi-label head)."""
    total = targets.new_zeros(())
    start = 0
    for name, width in head.outputs().items():
        target, out = targets[:, start:start + width], logits[name].float()
        start += width
        if head.task == "multi_label":
            total = total + F.binary_cross_entropy_with_logits(out, target)
        else:
            total = total + _SOFT_CE(out, target * (1.0 - smoothing) + smoothing / width)
    return total
