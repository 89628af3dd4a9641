"""Pre-training loop: AdamW + schedules, EMA teacher, bf16/fp32, DDP, checkpoint/resume, logging.

The trainer takes batches from any iterable (the pipeline's WebDataset loader, or synthetic clips). It resumes
from the latest checkpoint in ``run_dir/checkpoints`` on construction; :attr:`Trainer.step` then tells the
caller where its batch stream must start so the resumed run sees the same data as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from fils_model.checkpoint import (
    CheckpointManager,
    capture_rng,
    check_config,
    load_checkpoint,
    load_model_state,
    restore_rng,
)
from fils_model.config import PretrainConfig
from fils_model.distributed import DistEnv, all_reduce_mean
from fils_model.fils import FILSModel
from fils_model.metrics import MetricLogger
from fils_model.optim import build_optimizer, build_scheduler, ema_momentum
from fils_model.seeding import seed_everything

BATCH_KEYS = ("video", "mask", "action_tokens", "text_embedding", "pixels")


class Trainer:
    """``Trainer(cfg, run_dir).fit(batches)``; batches hold this rank's share of the global batch."""

    def __init__(self, cfg: PretrainConfig, run_dir: Path, dist_env: DistEnv | None = None) -> None:
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.env = dist_env or DistEnv()
        tcfg = cfg.trainer
        if tcfg.global_batch_size % self.env.world_size:
            raise ValueError(f"global_batch_size {tcfg.global_batch_size} not divisible by {self.env.world_size} ranks")
        seed_everything(tcfg.seed)  # identical initial weights on every rank
        self.model = FILSModel(cfg.model, cfg.loss).to(self.env.device)
        self.net = (
            DistributedDataParallel(
                self.model,
                broadcast_buffers=False,  # buffers are fixed position tables
                find_unused_parameters=self.model.has_unused_parameters,
            )
            if self.env.enabled
            else self.model
        )
        self.optimizer = build_optimizer(self.model, cfg.optim, tcfg.global_batch_size)
        self.scheduler = build_scheduler(self.optimizer, cfg.optim, tcfg.total_steps)
        bf16 = tcfg.precision == "bf16" or (tcfg.precision == "auto" and self.env.device.type == "cuda")
        self.autocast_dtype = torch.bfloat16 if bf16 else torch.float16 if tcfg.precision == "fp16" else None
        # fp16 (the released code's AMP) needs loss scaling; bf16 has fp32's range and does not.
        self.scaler = torch.amp.GradScaler(self.env.device.type, enabled=tcfg.precision == "fp16")
        self.checkpoints = CheckpointManager(self.run_dir / "checkpoints", tcfg.checkpoint_every, tcfg.keep_every)
        self.step = 0
        self.checkpoints.resume(self.load)
        self.logger = MetricLogger(self.run_dir, enabled=self.env.is_main, tensorboard=tcfg.tensorboard,
                                   resume_step=self.step)

    # -- state -------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Student, teacher, projector and heads (``model``), optimiser, scheduler, step, RNG, config."""
        return {
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": capture_rng(),
            "config": self.cfg.model_dump(mode="json"),
        }

    def load(self, path: Path) -> None:
        state = load_checkpoint(path)
        check_config(state.get("config", {}), self.cfg.model_dump(mode="json"), path, ("model", "loss"))
        load_model_state(self.model, state["model"], path)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        restore_rng(state["rng"])
        self.step = state["step"]

    def save(self) -> Path | None:
        if not self.env.is_main:
            return None
        return self.checkpoints.save(self.step, self.state_dict())

    # -- loop --------------------------------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.env.device.type, dtype=self.autocast_dtype)

    def train_step(self, batch: dict[str, torch.Tensor], diagnostics: bool = False) -> dict[str, float]:
        """One optimiser step plus the EMA update; returns rank-averaged scalars."""
        batch = {k: batch[k].to(self.env.device, non_blocking=True) for k in BATCH_KEYS if k in batch}
        self.model.train()
        with self._autocast():
            out = self.net(batch, diagnostics=diagnostics)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(out["loss"]).backward()
        self.scaler.unscale_(self.optimizer)
        params = [p for p in self.model.parameters() if p.grad is not None]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, self.cfg.optim.grad_clip or math.inf)
        lr = self.optimizer.param_groups[0]["lr"]
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        momentum = self._teacher_momentum()
        self.model.after_step(momentum)
        self.step += 1
        values = {k: all_reduce_mean(v.float()).item() for k, v in out.items()}
        return values | {"lr": lr, "ema_momentum": momentum if momentum is not None else math.nan,
                         "grad_norm": float(grad_norm)}

    def _teacher_momentum(self) -> float | None:
        """Momentum of the EMA update after this step; None when the teacher is not updated at this step.

        ``ema_update: epoch`` reproduces the released code (B2): one update at the end of each epoch, with the
        per-step schedule indexed by the epoch number, so the momentum stays near ``ema_start``."""
        optim, tcfg = self.cfg.optim, self.cfg.trainer
        if optim.ema_update == "step":
            return ema_momentum(self.step, optim, tcfg.total_steps)
        per_epoch = tcfg.steps_per_epoch or 1
        done = self.step + 1
        return ema_momentum(done // per_epoch - 1, optim, tcfg.total_steps) if done % per_epoch == 0 else None

    def fit(self, batches: Iterable[dict[str, torch.Tensor]]) -> dict[str, float]:
        """Train until ``trainer.total_steps``; returns the last step's metrics."""
        tcfg = self.cfg.trainer
        last: dict[str, float] = {}
        started, steps_since_log = time.perf_counter(), 0
        for batch in batches:
            if self.step >= tcfg.total_steps:
                break
            diag = (self.step + 1) % tcfg.diagnostics_every == 0
            last = self.train_step(batch, diagnostics=diag)
            steps_since_log += 1
            if self.step % tcfg.log_every == 0 or diag or self.step == tcfg.total_steps:
                elapsed = time.perf_counter() - started
                last["clips_per_s"] = tcfg.global_batch_size * steps_since_log / max(elapsed, 1e-9)
                self.logger.log(self.step, last)
                started, steps_since_log = time.perf_counter(), 0
            if self.step % tcfg.checkpoint_every == 0:
                self.save()
        if self.step > 0 and self.checkpoints.latest() != self.checkpoints.path(self.step):
            self.save()  # end of training or of the batch stream
        self.logger.close()
        return last
