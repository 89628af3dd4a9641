"""One construction of AdamW and its learning-rate schedule for pre-training, fine-tuning and the probes.

timm's optimizer factory makes the parameter groups: no weight decay on 1-D tensors, biases and the names a
model's ``no_weight_decay()`` lists; with ``layer_decay`` one group per encoder depth, whose ``lr_scale`` the
scheduler applies. The schedule is timm's per-iteration warm-up + cosine, stepped with the optimiser step count
(``step_update(step)`` before each step), so it holds no state a checkpoint has to carry. All learning rates of an
:class:`~fils_model.config.AdamWConfig` are per 256 clips (VideoMAE's linear scaling rule).
"""

from __future__ import annotations

import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler
from torch import nn

from fils_model.config import AdamWConfig


def batch_scale(global_batch_size: int) -> float:
    """Factor of the linear scaling rule: ``lr = lr_per_256 * batch / 256``."""
    return global_batch_size / 256


def build_optimizer(model: nn.Module, cfg: AdamWConfig, global_batch_size: int,
                    layer_decay: float | None = None, fused: bool = False) -> torch.optim.Optimizer:
    """``fused``: torch's single-kernel AdamW (one launch for all parameters; the trainer sets it on CUDA)."""
    return create_optimizer_v2(model, opt="adamw", lr=cfg.base_lr * batch_scale(global_batch_size),
                               weight_decay=cfg.weight_decay, layer_decay=layer_decay, betas=cfg.betas, eps=cfg.eps,
                               fused=fused or None)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: AdamWConfig, total_steps: int, warmup_steps: int,
                    global_batch_size: int) -> CosineLRScheduler:
    """Linear warm-up from ``warmup_start_lr`` over ``warmup_steps``, then cosine to ``min_lr`` at ``total_steps``."""
    scale = batch_scale(global_batch_size)
    return CosineLRScheduler(optimizer, t_initial=total_steps - warmup_steps, lr_min=cfg.min_lr * scale,
                             warmup_t=warmup_steps, warmup_lr_init=cfg.warmup_start_lr * scale, warmup_prefix=True,
                             t_in_epochs=False)
