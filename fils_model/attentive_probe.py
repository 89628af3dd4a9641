"""Attentive probe on frozen tokens (the V-JEPA evaluation protocol): :class:`~fils_model.probe_sweep.AttentiveHeads`
trained on an encoder's output tokens, computed once and cached; only the probe trains."""
from __future__ import annotations

import torch

from fils_model.finetune_config import FinetuneRecipe
from fils_model.probe_sweep import AttentiveHeads, ProbeSetting, train_probe_sweep


def train_attentive_probe(tokens: torch.Tensor, targets: dict[str, torch.Tensor], recipe: FinetuneRecipe
                          ) -> AttentiveHeads:
    """Train a probe on cached ``tokens (B, N, D)`` and their ``target_<head>`` ``targets`` with the linear probe's
    optimiser and schedule (``recipe``: AdamW, warm-up + cosine, batch ``global_batch_size``, ``total_steps``);
    returns it in eval mode."""
    setting = ProbeSetting(recipe.optim.base_lr, recipe.optim.weight_decay)
    (probe,) = train_probe_sweep(lambda: AttentiveHeads(tokens.shape[-1], recipe.head), tokens, targets, recipe,
                                 [setting])
    return probe
