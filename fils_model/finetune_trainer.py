"""Fine-tuning loop (docs/method.md): timm AdamW with layer-wise lr decay, warm-up + cosine per step, Mixup/CutMix,
label smoothing, drop path (in the encoder), optional model EMA, bf16 on GPU, DDP, checkpoints and resume.

The trained weights are :attr:`FinetuneTrainer.model`, the ones the peers evaluate. The EMA
(:attr:`FinetuneTrainer.ema_model`) is a second result: with a fixed decay of 0.9999 the step-1 weights would
still carry 0.9999^T of it after T steps (72 % after 3.2k steps), so its decay is warmed up by default.

Like the pre-training :class:`~fils_model.trainer.Trainer`, it resumes from the latest checkpoint in
``run_dir/checkpoints`` on construction; :attr:`step` then says where the caller's batch stream starts.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from timm.data import Mixup
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler
from timm.utils import ModelEmaV3
from torch.nn.parallel import DistributedDataParallel

from fils_model.checkpoint import CheckpointManager, capture_rng, load_checkpoint, load_model_state, restore_rng
from fils_model.classifier import VideoClassifier
from fils_model.distributed import DistEnv, all_reduce_mean
from fils_model.finetune_config import FinetuneRecipe
from fils_model.finetune_loss import classification_loss, dense_targets
from fils_model.metrics import MetricLogger


def build_optimizer(model: torch.nn.Module, recipe: FinetuneRecipe, layer_decay: float | None) -> torch.optim.Optimizer:
    optim = recipe.optim
    return create_optimizer_v2(model, opt="adamw", lr=optim.base_lr * recipe.global_batch_size / 256,
                               weight_decay=optim.weight_decay, layer_decay=layer_decay, betas=optim.betas,
                               eps=optim.eps)


def build_scheduler(optimizer: torch.optim.Optimizer, recipe: FinetuneRecipe) -> CosineLRScheduler:
    """Linear warm-up from ``warmup_start_lr`` then cosine to ``min_lr``, stepped per iteration; timm applies
    each group's layer-decay ``lr_scale``."""
    return CosineLRScheduler(optimizer, t_initial=recipe.total_steps - recipe.warmup_steps,
                             lr_min=recipe.optim.min_lr, warmup_t=recipe.warmup_steps,
                             warmup_lr_init=recipe.optim.warmup_start_lr, warmup_prefix=True, t_in_epochs=False)


class FinetuneTrainer:
    """``FinetuneTrainer(recipe, model, run_dir).fit(batches)``; batches hold this rank's share of a global batch:
    ``video`` ``(B, 3, T, H, W)`` and one ``target_<head>`` per head."""

    def __init__(self, recipe: FinetuneRecipe, model: VideoClassifier, run_dir: Path,
                 dist_env: DistEnv | None = None) -> None:
        self.recipe, self.run_dir = recipe, Path(run_dir)
        self.env = dist_env or DistEnv()
        if recipe.global_batch_size % self.env.world_size:
            raise ValueError(f"global_batch_size {recipe.global_batch_size} not divisible by {self.env.world_size} ranks")
        self.local_batch = recipe.global_batch_size // self.env.world_size
        if recipe.mix.enabled and self.local_batch % 2:
            raise ValueError(f"Mixup/CutMix pair clips inside a batch: the per-rank batch {self.local_batch} must be even")
        self.model = model.to(self.env.device)
        self.net = DistributedDataParallel(self.model) if self.env.enabled else self.model
        self.optimizer = build_optimizer(self.model, recipe, recipe.optim.layer_decay)
        self.scheduler = build_scheduler(self.optimizer, recipe)
        self.ema = (ModelEmaV3(self.model, decay=recipe.ema_decay, use_warmup=recipe.ema_warmup)
                    if recipe.model_ema else None)
        width = sum(recipe.head.outputs().values())
        self.mixup = Mixup(mixup_alpha=recipe.mix.mixup, cutmix_alpha=recipe.mix.cutmix, prob=recipe.mix.prob,
                           switch_prob=recipe.mix.switch_prob, mode="batch", label_smoothing=0.0,
                           num_classes=width, multi_label=True) if recipe.mix.enabled else None
        bf16 = recipe.precision == "bf16" or (recipe.precision == "auto" and self.env.device.type == "cuda")
        self.autocast = (lambda: torch.autocast(self.env.device.type, dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
        self.checkpoints = CheckpointManager(self.run_dir / "checkpoints", recipe.checkpoint_every, keep_every=10**9)
        self.step = 0
        self.checkpoints.resume(self.load)
        self.logger = MetricLogger(self.run_dir, enabled=self.env.is_main, tensorboard=False, resume_step=self.step)

    @property
    def ema_model(self) -> VideoClassifier | None:
        """The EMA of the weights, when ``recipe.model_ema``."""
        return self.ema.module if self.ema is not None else None  # type: ignore[return-value]

    def state_dict(self) -> dict[str, Any]:
        state = {"step": self.step, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "rng": capture_rng(), "recipe": self.recipe.model_dump(mode="json")}
        if self.ema is not None:
            state["ema"] = self.ema.module.state_dict()
        return state

    def load(self, path: Path) -> None:
        state = load_checkpoint(path)
        load_model_state(self.model, state["model"], path)
        if self.ema is not None:
            load_model_state(self.ema.module, state["ema"], path)
        self.optimizer.load_state_dict(state["optimizer"])
        restore_rng(state["rng"])
        self.step = state["step"]

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        device = self.env.device
        video = batch["video"].to(device, non_blocking=True)
        targets = dense_targets({k: v.to(device) for k, v in batch.items() if k != "video"}, self.recipe.head)
        if self.mixup is not None:
            # timm cuts CutMix boxes from the last two dims: fold time into channels so every frame gets the box.
            b, c, t, h, w = video.shape
            flat, targets = self.mixup(video.reshape(b, c * t, h, w), targets)
            video = flat.reshape(b, c, t, h, w)
        self.scheduler.step_update(self.step)
        self.net.train()
        with self.autocast():
            logits = self.net(video)
        loss = classification_loss(logits, targets, self.recipe.head, self.recipe.mix.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for p in self.model.parameters() if p.grad is not None]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, self.recipe.optim.grad_clip or math.inf)
        lr = max(group["lr"] for group in self.optimizer.param_groups)
        self.optimizer.step()
        self.step += 1
        if self.ema is not None:
            self.ema.update(self.model, step=self.step)
        return {"loss": all_reduce_mean(loss.float()).item(), "lr": lr, "grad_norm": float(grad_norm)}

    def fit(self, batches: Iterable[dict[str, torch.Tensor]]) -> dict[str, float]:
        """Train until ``total_steps``; returns the last logged metrics."""
        last: dict[str, float] = {}
        for batch in batches:
            if self.step >= self.recipe.total_steps:
                break
            last = self.train_step(batch)
            if self.step % self.recipe.log_every == 0 or self.step == self.recipe.total_steps:
                self.logger.log(self.step, last)
            if self.step % self.recipe.checkpoint_every == 0 and self.env.is_main:
                self.checkpoints.save(self.step, self.state_dict())
        if self.step < self.recipe.total_steps:
            raise RuntimeError(f"the batch stream ended at step {self.step} of {self.recipe.total_steps}")
        self.logger.close()
        return last
