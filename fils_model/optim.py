"""AdamW parameter groups and the per-step learning-rate and EMA-momentum schedules."""

from __future__ import annotations

import math

import torch
from torch import nn

from fils_model.config import OptimConfig

# Parameters never decayed besides 1-D tensors and biases (VideoMAE's ``no_weight_decay`` set plus CLIP's scale).
NO_DECAY = ("pos_embed", "mask_token", "logit_scale")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Trainable parameters split into decayed weights and undecayed norms/biases/positions/scalars."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        skip = param.ndim <= 1 or name.endswith(".bias") or any(key in name for key in NO_DECAY)
        (no_decay if skip else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def peak_lr(cfg: OptimConfig, global_batch_size: int) -> float:
    """Linear scaling rule: ``base_lr * batch / 256``."""
    return cfg.base_lr * global_batch_size / 256


def lr_factor(step: int, cfg: OptimConfig, total_steps: int) -> float:
    """Multiplier of the peak lr: linear warm-up from ``warmup_start_lr``, then cosine to ``min_lr``."""
    if step < cfg.warmup_steps:
        start = cfg.warmup_start_lr / cfg.base_lr
        return start + (1.0 - start) * step / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps))
    floor = cfg.min_lr / cfg.base_lr
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def ema_momentum(step: int, cfg: OptimConfig, total_steps: int) -> float:
    """Teacher momentum after ``step`` optimiser steps, ``ema_start`` -> ``ema_end`` over training."""
    progress = min(1.0, step / total_steps)
    if cfg.ema_schedule == "cosine":
        progress = 0.5 * (1.0 - math.cos(math.pi * progress))
    return cfg.ema_start + (cfg.ema_end - cfg.ema_start) * progress


def build_optimizer(model: nn.Module, cfg: OptimConfig, global_batch_size: int) -> torch.optim.AdamW:
    return torch.optim.AdamW(
        param_groups(model, cfg.weight_decay), lr=peak_lr(cfg, global_batch_size), betas=cfg.betas, eps=cfg.eps
    )


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-iteration schedule; its state (the step count) is checkpointed with the optimiser."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, cfg, total_steps))
