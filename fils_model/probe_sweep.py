"""Probe sweep on cached frozen features: several probe settings (learning rate, weight decay) trained side by side
in one pass over the data, the V-JEPA "multi-head" evaluation.

A frozen-encoder probe's score depends on its lr and weight decay as much as on the features, so a fair comparison
of checkpoints picks each one's best setting on held-out data. One pass serves every setting: each step draws one
batch and gathers it once (for cached tokens a ``(B, N, D)`` copy), and every probe steps on it, so the settings
also see the same clips in the same order and differ only in their lr and weight decay. Every probe starts from the
same initialisation (torch seeded with the recipe's seed before each is built) and has its own AdamW and schedule,
so a member of the sweep is bit-identical to that setting trained alone; the single-setting trainers
(``train_probe``, ``train_attentive_probe``) are sweeps of one.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from pydantic import ValidationError
from timm.layers import Mlp, trunc_normal_
from torch import nn

from fils_model.classifier import linear_heads
from fils_model.finetune_config import FinetuneOptim, FinetuneRecipe, HeadConfig
from fils_model.finetune_loss import classification_loss, dense_targets, target_key
from fils_model.optim import build_optimizer, build_scheduler


@dataclass(frozen=True)
class ProbeSetting:
    """``lr``: peak lr per 256 clips (as ``FinetuneOptim.base_lr``), scaled by the recipe's global batch."""

    lr: float
    weight_decay: float

    @property
    def label(self) -> str:
        return f"lr={self.lr:g},wd={self.weight_decay:g}"


class LinearHeads(nn.Module):
    """The classifier's ``fc_norm`` + one linear layer per head on pooled features:
    ``forward(features (B, D)) -> {head name: logits}``."""

    def __init__(self, dim: int, head: HeadConfig, norm_eps: float = 1e-6) -> None:
        super().__init__()
        self.fc_norm = nn.LayerNorm(dim, eps=norm_eps)
        self.heads = linear_heads(dim, head)

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        pooled = self.fc_norm(features)
        return {name: linear(pooled) for name, linear in self.heads.items()}


class AttentiveHeads(nn.Module):
    """Attentive probe on frozen tokens: a learnable query cross-attends over the tokens, a residual MLP refines the
    pooled vector, and one linear layer per head classifies it: ``forward(tokens (B, N, D)) -> {head name: logits}``.

    Mean pooling (the linear probe) averages away *where* and *when* things happen; a motion that is visible only in
    some tokens survives attentive pooling.
    """

    def __init__(self, dim: int, head: HeadConfig, attention_heads: int = 4) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.zeros(1, 1, dim))
        self.norm_tokens = nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, attention_heads, batch_first=True)
        self.norm_pooled = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, 4 * dim)
        self.heads = nn.ModuleDict({name: nn.Linear(dim, width) for name, width in head.outputs().items()})
        trunc_normal_(self.query, std=0.02)

    def forward(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        keys = self.norm_tokens(tokens)
        pooled = self.attention(self.query.expand(len(tokens), -1, -1), keys, keys, need_weights=False)[0]
        pooled = (pooled + self.mlp(self.norm_pooled(pooled)))[:, 0]
        return {name: linear(pooled) for name, linear in self.heads.items()}


def _optim_of(recipe: FinetuneRecipe, setting: ProbeSetting) -> FinetuneOptim:
    try:
        return FinetuneOptim.model_validate(recipe.optim.model_dump() | {"base_lr": setting.lr,
                                                                          "weight_decay": setting.weight_decay})
    except ValidationError as error:
        problems = "; ".join(problem["msg"] for problem in error.errors())
        raise ValueError(f"probe setting {setting.label} does not fit recipe.optim ({problems}); give lr > 0 and "
                         "weight_decay >= 0, and set recipe.optim.min_lr no higher than the smallest lr") from error


def _check_data(inputs: torch.Tensor, targets: dict[str, torch.Tensor], head: HeadConfig) -> None:
    if len(inputs) == 0:
        raise ValueError("no clip to train the probes on: inputs is empty (is the training split empty, or did "
                         "every clip fail to decode?)")
    for name in head.outputs():
        if target_key(name) not in targets:
            raise ValueError(f"targets lack {target_key(name)!r} (the {head.task} head {name!r}); got "
                             f"{sorted(targets)}")
    for key, target in targets.items():
        if len(target) != len(inputs):
            raise ValueError(f"targets[{key!r}] has {len(target)} rows but inputs has {len(inputs)}; give one target "
                             "row per input row, in the same order")


def train_probe_sweep(make_probe: Callable[[], nn.Module], inputs: torch.Tensor, targets: dict[str, torch.Tensor],
                      recipe: FinetuneRecipe, settings: Sequence[ProbeSetting]) -> list[nn.Module]:
    """One probe per setting, trained on cached ``inputs`` (features or tokens) for ``recipe.total_steps`` steps of
    ``recipe.global_batch_size`` random clips with the recipe's AdamW and warm-up + cosine schedule, its lr and weight
    decay replaced by the setting's. ``make_probe()`` returns a module mapping a batch of inputs to ``{head: logits}``
    for every head of ``recipe.head``; ``targets`` holds one ``target_<head>`` tensor per head. Returns the probes in
    eval mode, in the order of ``settings``."""
    if not settings:
        raise ValueError("no probe setting to train: give at least one ProbeSetting(lr, weight_decay)")
    _check_data(inputs, targets, recipe.head)
    probes, optimizers, schedulers = [], [], []
    for setting in settings:
        optim = _optim_of(recipe, setting)
        torch.manual_seed(recipe.seed)
        probe = make_probe().train()
        optimizer = build_optimizer(probe, optim, recipe.global_batch_size)
        probes.append(probe)
        optimizers.append(optimizer)
        schedulers.append(build_scheduler(optimizer, optim, recipe.total_steps, recipe.warmup_steps,
                                          recipe.global_batch_size))
    generator = torch.Generator().manual_seed(recipe.seed)
    batch = min(recipe.global_batch_size, len(inputs))
    keys = [target_key(name) for name in recipe.head.outputs()]
    for step in range(recipe.total_steps):
        index = torch.randperm(len(inputs), generator=generator)[:batch]
        batch_inputs = inputs[index]
        batch_targets = dense_targets({key: targets[key][index] for key in keys}, recipe.head)
        for probe, optimizer, scheduler in zip(probes, optimizers, schedulers):
            scheduler.step_update(step)
            loss = classification_loss(probe(batch_inputs), batch_targets, recipe.head, recipe.mix.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return [probe.eval() for probe in probes]
