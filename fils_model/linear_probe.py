"""Frozen-encoder linear probe: the encoder's pooled features are computed once (one deterministic view per
clip), then only ``fc_norm`` + heads are trained on them with the recipe's AdamW and warm-up/cosine schedule.
Training thousands of head steps then costs less than one pass of the encoder, which is what lets the nightly
sweep probe every checkpoint."""
from __future__ import annotations

from collections.abc import Iterable

import torch

from fils_model.classifier import VideoClassifier
from fils_model.finetune_config import FinetuneRecipe
from fils_model.precision import inference_autocast
from fils_model.probe_sweep import LinearHeads, ProbeSetting, train_probe_sweep


@torch.no_grad()
def extract_features(model: VideoClassifier, batches: Iterable[dict[str, torch.Tensor]],
                     device: torch.device) -> dict[str, torch.Tensor]:
    """Concatenate ``features(video)`` and every ``target_*`` over ``batches`` (CPU tensors)."""
    model.encoder.eval().to(device)
    collected: dict[str, list[torch.Tensor]] = {}
    for batch in batches:
        with inference_autocast(device):
            features = model.features(batch["video"].to(device))
        collected.setdefault("features", []).append(features.float().cpu())
        for key, value in batch.items():
            if key.startswith("target_"):
                collected.setdefault(key, []).append(value)
    if not collected:
        raise ValueError("no clip to extract features from: the training split is empty or every clip failed")
    return {key: torch.cat(parts) for key, parts in collected.items()}


def train_probe(model: VideoClassifier, data: dict[str, torch.Tensor], recipe: FinetuneRecipe) -> None:
    """Train ``model``'s ``fc_norm`` and heads, from their current weights, on cached ``features`` (and the
    ``target_*`` of ``data``) for ``recipe.total_steps`` steps: a sweep of the recipe's one setting."""
    model.freeze_encoder()

    def classifier_heads() -> LinearHeads:
        """The classifier's own ``fc_norm`` and heads, so they train in place."""
        probe = LinearHeads(model.cfg.embed_dim, model.head_cfg, model.cfg.norm_eps)
        probe.fc_norm, probe.heads = model.fc_norm, model.heads
        return probe

    setting = ProbeSetting(recipe.optim.base_lr, recipe.optim.weight_decay)
    targets = {key: value for key, value in data.items() if key != "features"}
    train_probe_sweep(classifier_heads, data["features"], targets, recipe, [setting])
