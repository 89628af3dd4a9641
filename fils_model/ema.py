"""EMA teacher update, theta_t <- m * theta_t + (1 - m) * theta_s, every optimiser step (D4, fixes B2), and the
schedule of the momentum m."""

from __future__ import annotations

import math

import torch
from torch import nn

from fils_model.config import OptimConfig


def ema_momentum(step: int, cfg: OptimConfig, total_steps: int) -> float:
    """Teacher momentum after ``step`` optimiser steps, ``ema_start`` -> ``ema_end`` over training."""
    progress = min(1.0, step / total_steps)
    if cfg.ema_schedule == "cosine":
        progress = 0.5 * (1.0 - math.cos(math.pi * progress))
    return cfg.ema_start + (cfg.ema_end - cfg.ema_start) * progress


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """Move every teacher parameter toward its student twin; the modules must have identical structure."""
    t_params = list(teacher.parameters())
    s_params = [p.detach() for p in student.parameters()]
    if len(t_params) != len(s_params):
        raise ValueError(f"teacher has {len(t_params)} parameters, student {len(s_params)}")
    torch._foreach_mul_(t_params, momentum)
    torch._foreach_add_(t_params, s_params, alpha=1.0 - momentum)
