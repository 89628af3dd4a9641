"""Frozen-encoder linear probe: the encoder's pooled features are computed once (one deterministic view per
clip), then only ``fc_norm`` + heads are trained on them with the recipe's AdamW and warm-up/cosine schedule.
Training thousands of head steps then costs less than one pass of the encoder, which is what lets the nightly
sweep probe every checkpoint."""
from __future__ import annotations

from collections.abc import Iterable

import torch

from fils_model.classifier import VideoClassifier
from fils_model.finetune_config import FinetuneRecipe
from fils_model.finetune_loss import classification_loss, dense_targets
from fils_model.optim import build_optimizer, build_scheduler
from fils_model.precision import inference_autocast


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


def train_probe(model: VideoClassifier, data: dict[str, torch.Tensor], recipe: FinetuneRecipe) -> dict[str, float]:
    """Train ``model``'s ``fc_norm`` and heads on cached ``features`` for ``recipe.total_steps`` steps."""
    model.freeze_encoder()
    features = data["features"]
    head = torch.nn.ModuleDict({"fc_norm": model.fc_norm, "heads": model.heads})
    optimizer = build_optimizer(head, recipe.optim, recipe.global_batch_size)
    scheduler = build_scheduler(optimizer, recipe.optim, recipe.total_steps, recipe.warmup_steps,
                                recipe.global_batch_size)
    generator = torch.Generator().manual_seed(recipe.seed)
    batch = min(recipe.global_batch_size, len(features))
    loss = torch.zeros(())
    head.train()
    for step in range(recipe.total_steps):
        scheduler.step_update(step)
        index = torch.randperm(len(features), generator=generator)[:batch]
        targets = dense_targets({k: v[index] for k, v in data.items() if k != "features"}, recipe.head)
        loss = classification_loss(model.classify(features[index]), targets, recipe.head,
                                   recipe.mix.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    head.eval()
    return {"loss": float(loss.detach())}
