"""Fine-tuning on the one training loop (docs/method.md): AdamW with layer-wise lr decay, warm-up + cosine per step,
Mixup/CutMix, label smoothing, drop path (in the encoder), optional model EMA, bf16 on GPU, DDP, checkpoints and
resume.

The trained weights are :attr:`FinetuneTrainer.model`, the ones the peers evaluate. The EMA
(:attr:`FinetuneTrainer.ema_model`) is a second result: with a fixed decay of 0.9999 the step-1 weights would
still carry 0.9999^T of it after T steps (72 % after 3.2k steps), so its decay is warmed up by default.

It resumes from the latest checkpoint in ``run_dir/checkpoints`` on construction; :attr:`step` then says where
the caller's batch stream starts.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from timm.data import Mixup
from timm.utils import ModelEmaV3

from fils_model.checkpoint import load_model_state
from fils_model.classifier import VideoClassifier
from fils_model.distributed import DistEnv
from fils_model.finetune_config import FinetuneRecipe
from fils_model.finetune_loss import classification_loss, dense_targets
from fils_model.trainer import LoopSettings, Trainer
from fils_model.video_input import normalise_video


def loop_settings(recipe: FinetuneRecipe) -> LoopSettings:
    return LoopSettings(optim=recipe.optim, total_steps=recipe.total_steps, warmup_steps=recipe.warmup_steps,
                        global_batch_size=recipe.global_batch_size, precision=recipe.precision,
                        checkpoint_every=recipe.checkpoint_every, log_every=recipe.log_every,
                        layer_decay=recipe.optim.layer_decay)


class FinetuneTrainer(Trainer):
    """``FinetuneTrainer(recipe, model, run_dir).fit(batches)``; batches hold this rank's share of a global batch:
    ``video`` ``(B, 3, T, H, W)`` and one ``target_<head>`` per head."""

    def __init__(self, recipe: FinetuneRecipe, model: VideoClassifier, run_dir: Path,
                 dist_env: DistEnv | None = None) -> None:
        self.recipe = recipe
        super().__init__(model, loop_settings(recipe), run_dir, dist_env)
        if recipe.mix.enabled and self.local_batch % 2:
            raise ValueError(f"Mixup/CutMix pair clips inside a batch: the per-rank batch {self.local_batch} must be even")
        self.ema = (ModelEmaV3(self.model, decay=recipe.ema_decay, use_warmup=recipe.ema_warmup)
                    if recipe.model_ema else None)
        width = sum(recipe.head.outputs().values())
        self.mixup = Mixup(mixup_alpha=recipe.mix.mixup, cutmix_alpha=recipe.mix.cutmix, prob=recipe.mix.prob,
                           switch_prob=recipe.mix.switch_prob, mode="batch", label_smoothing=0.0,
                           num_classes=width, multi_label=True) if recipe.mix.enabled else None
        self.resume()

    @property
    def ema_model(self) -> VideoClassifier | None:
        """The EMA of the weights, when ``recipe.model_ema``."""
        return self.ema.module if self.ema is not None else None  # type: ignore[return-value]

    def extra_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"recipe": self.recipe.model_dump(mode="json")}
        if self.ema is not None:
            state["ema"] = self.ema.module.state_dict()
        return state

    def load_extra_state(self, state: dict[str, Any], path: Path) -> None:
        if self.ema is not None:
            load_model_state(self.ema.module, state["ema"], path)

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        device = self.env.device
        video = batch["video"].to(device, non_blocking=True)
        if video.dtype == torch.uint8:  # the loader's frames, normalised on the device
            video = normalise_video(video)
        targets = dense_targets({k: v.to(device) for k, v in batch.items() if k != "video"}, self.recipe.head)
        if self.mixup is not None:
            # timm cuts CutMix boxes from the last two dims: fold time into channels so every frame gets the box.
            b, c, t, h, w = video.shape
            flat, targets = self.mixup(video.reshape(b, c * t, h, w), targets)
            video = flat.reshape(b, c, t, h, w)
        with self.autocast():
            logits = self.net(video)
        return {"loss": classification_loss(logits, targets, self.recipe.head, self.recipe.mix.label_smoothing)}

    def after_step(self) -> dict[str, float]:
        if self.ema is not None:
            self.ema.update(self.model, step=self.step)
        return {}

    def fit(self, batches: Iterable[dict[str, torch.Tensor]]) -> dict[str, float]:
        """Train until ``total_steps``; a batch stream that ends earlier is an error (the step reached is saved)."""
        last = super().fit(batches)
        if self.step < self.recipe.total_steps:
            raise RuntimeError(f"the batch stream ended at step {self.step} of {self.recipe.total_steps}")
        return last
