"""FILS pre-training on the one training loop: the student/predictor/projector/teacher model, its loss terms,
the teacher's EMA after each step, collapse diagnostics on their own cadence, and the body of a training process.

Batches come from any iterable (the pretrain stage's WebDataset loader, or generated clips in tests).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from fils_model.checkpoint import check_config
from fils_model.config import COMPUTE_ONLY_SETTINGS, PretrainConfig
from fils_model.distributed import DistEnv, cleanup, init_distributed
from fils_model.ema import ema_momentum
from fils_model.fils import FILSModel
from fils_model.loss_floors import LOSS_FLOORS_JSON, loss_floors
from fils_model.seeding import seed_everything
from fils_model.trainer import LoopSettings, Trainer
from fils_model.video_input import normalise_video

BATCH_KEYS = ("video", "mask", "visible_index", "masked_index", "action_tokens", "text_embedding", "pixels")
# ``make_batches(start_step, env)``: this rank's batches from ``start_step`` on.
BatchFactory = Callable[[int, DistEnv], Iterable[dict[str, torch.Tensor]]]


def loop_settings(cfg: PretrainConfig) -> LoopSettings:
    t = cfg.trainer
    return LoopSettings(optim=cfg.optim, total_steps=t.total_steps, warmup_steps=cfg.optim.warmup_steps,
                        global_batch_size=t.global_batch_size, precision=t.precision,
                        checkpoint_every=t.checkpoint_every, log_every=t.log_every, keep_every=t.keep_every,
                        tensorboard=t.tensorboard)


class PretrainTrainer(Trainer):
    """``PretrainTrainer(cfg, run_dir).fit(batches)``: student, teacher, projector and heads in one checkpoint."""

    def __init__(self, cfg: PretrainConfig, run_dir: Path, dist_env: DistEnv | None = None) -> None:
        self.cfg = cfg
        seed_everything(cfg.trainer.seed)  # identical initial weights on every rank
        model = FILSModel(cfg.model, cfg.loss)
        if cfg.trainer.compile:
            model.compile_parts()
        super().__init__(model, loop_settings(cfg), run_dir, dist_env,
                         broadcast_buffers=False,  # buffers are fixed position tables
                         find_unused_parameters=model.has_unused_parameters)
        self.resume()
        if self.env.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / LOSS_FLOORS_JSON).write_text(json.dumps(self.loss_floors(), indent=2))

    def loss_floors(self) -> dict[str, float]:
        """Each active loss term's value at no learning; ActCLIP contrasts the global batch when it gathers
        negatives across ranks, else each rank's own."""
        candidates = self.cfg.trainer.global_batch_size if self.cfg.loss.gather_negatives else self.local_batch
        return loss_floors(self.cfg.loss, self.cfg.model, candidates)

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        batch = {k: batch[k].to(self.env.device, non_blocking=True) for k in BATCH_KEYS if k in batch}
        if batch["video"].dtype == torch.uint8:  # the loader's frames: normalised here, the pixel target as they are
            batch["pixels"] = batch["video"]
            batch["video"] = normalise_video(batch["video"])
        with self.autocast():
            return self.net(batch, diagnostics=self._diagnostics_step(self.step + 1))

    def _diagnostics_step(self, step: int) -> bool:
        return step % self.cfg.trainer.diagnostics_every == 0

    def should_log(self) -> bool:
        return super().should_log() or self._diagnostics_step(self.step)

    def after_step(self) -> dict[str, float]:
        momentum = self._teacher_momentum()
        self.model.after_step(momentum)
        return {"ema_momentum": momentum if momentum is not None else math.nan}

    def _teacher_momentum(self) -> float | None:
        """Momentum of the EMA update after this step (``self.step`` steps done); None when the teacher is not
        updated at this step.

        ``ema_update: epoch`` reproduces the released code (B2): one update at the end of each epoch, with the
        per-step schedule indexed by the epoch number, so the momentum stays near ``ema_start``."""
        optim, tcfg = self.cfg.optim, self.cfg.trainer
        if optim.ema_update == "step":
            return ema_momentum(self.step - 1, optim, tcfg.total_steps)
        per_epoch = tcfg.steps_per_epoch or 1
        return ema_momentum(self.step // per_epoch - 1, optim, tcfg.total_steps) if self.step % per_epoch == 0 else None

    def extra_state(self) -> dict[str, Any]:
        return {"config": self.cfg.model_dump(mode="json")}

    def load_extra_state(self, state: dict[str, Any], path: Path) -> None:
        check_config(state.get("config", {}), self.cfg.model_dump(mode="json"), path, ("model", "loss"),
                     ignore=COMPUTE_ONLY_SETTINGS)


def run_pretraining(cfg: PretrainConfig, run_dir: Path, make_batches: BatchFactory) -> dict[str, float]:
    """The body of a training process (one per rank under ``torchrun``): join the process group, resume or start
    a :class:`PretrainTrainer`, train on ``make_batches(trainer.step, env)``, leave the group."""
    env = init_distributed()
    try:
        trainer = PretrainTrainer(cfg, run_dir, env)
        return trainer.fit(make_batches(trainer.step, env))
    finally:
        cleanup()
