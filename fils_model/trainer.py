"""The one training loop of pre-training and fine-tuning: AdamW + warm-up/cosine schedule (fils_model.optim), DDP,
bf16/fp16/fp32, gradient clipping, checkpoints with resume, metric logging.

What is trained and how its loss is computed belongs to a subclass (:class:`~fils_model.pretrain_trainer.
PretrainTrainer`, :class:`~fils_model.finetune_trainer.FinetuneTrainer`): it builds the model, implements
:meth:`Trainer.compute_loss` and, where it keeps more state (an EMA), :meth:`Trainer.after_step` and the
``extra_state`` pair, then calls :meth:`Trainer.resume` last in its constructor. After that :attr:`Trainer.step`
says where the caller's batch stream must start so a resumed run sees the same data as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from fils_model.checkpoint import CheckpointManager, capture_rng, load_checkpoint, load_model_state, restore_rng
from fils_model.config import AdamWConfig
from fils_model.distributed import DistEnv, mean_over_ranks
from fils_model.metrics import MetricLogger
from fils_model.optim import build_optimizer, build_scheduler


@dataclass(frozen=True)
class LoopSettings:
    """What the loop itself needs from a pre-training config or a fine-tuning recipe."""

    optim: AdamWConfig
    total_steps: int
    warmup_steps: int
    global_batch_size: int
    precision: Literal["auto", "fp32", "bf16", "fp16"]
    checkpoint_every: int
    log_every: int
    keep_every: int = 10**9
    layer_decay: float | None = None
    tensorboard: bool = False


class Trainer:
    """``fit(batches)`` trains until ``total_steps``; batches hold this rank's share of the global batch."""

    def __init__(self, model: nn.Module, loop: LoopSettings, run_dir: Path, dist_env: DistEnv | None = None,
                 **ddp_options: Any) -> None:
        self.loop, self.run_dir = loop, Path(run_dir)
        self.env = dist_env or DistEnv()
        if loop.global_batch_size % self.env.world_size:
            raise ValueError(f"global_batch_size {loop.global_batch_size} not divisible by {self.env.world_size} ranks")
        self.local_batch = loop.global_batch_size // self.env.world_size
        self.model = model.to(self.env.device)
        self.net = DistributedDataParallel(self.model, **ddp_options) if self.env.enabled else self.model
        self.optimizer = build_optimizer(self.model, loop.optim, loop.global_batch_size, loop.layer_decay,
                                         fused=self.env.device.type == "cuda")
        self.scheduler = build_scheduler(self.optimizer, loop.optim, loop.total_steps, loop.warmup_steps,
                                         loop.global_batch_size)
        bf16 = loop.precision == "bf16" or (loop.precision == "auto" and self.env.device.type == "cuda")
        self.autocast_dtype = torch.bfloat16 if bf16 else torch.float16 if loop.precision == "fp16" else None
        # fp16 (the released code's AMP) needs loss scaling; bf16 has fp32's range and does not.
        self.scaler = torch.amp.GradScaler(self.env.device.type, enabled=loop.precision == "fp16")
        self.checkpoints = CheckpointManager(self.run_dir / "checkpoints", loop.checkpoint_every, loop.keep_every)
        self.step = 0

    def resume(self) -> None:
        """Load the latest checkpoint of the run, if any, and open the metric log after its step."""
        self.checkpoints.resume(self.load)
        self.logger = MetricLogger(self.run_dir, enabled=self.env.is_main, tensorboard=self.loop.tensorboard,
                                   resume_step=self.step)

    # -- what a subclass defines -------------------------------------------------------------------------
    def compute_loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Forward ``batch`` through :attr:`net` (inside :meth:`autocast`); ``loss`` plus any logged terms."""
        raise NotImplementedError

    def after_step(self) -> dict[str, float]:
        """Called after each optimiser step (EMA updates); returns values to log."""
        return {}

    def extra_state(self) -> dict[str, Any]:
        return {}

    def load_extra_state(self, state: dict[str, Any], path: Path) -> None:
        """Check and restore what :meth:`extra_state` saved; runs before the model and optimiser are loaded."""

    def should_log(self) -> bool:
        return self.step % self.loop.log_every == 0 or self.step == self.loop.total_steps

    # -- state -------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(), "rng": capture_rng()} | self.extra_state()

    def load(self, path: Path) -> None:
        state = load_checkpoint(path)
        self.load_extra_state(state, path)
        load_model_state(self.model, state["model"], path)
        self.optimizer.load_state_dict(state["optimizer"])
        if "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        restore_rng(state["rng"])
        self.step = state["step"]

    def save(self) -> Path | None:
        if not self.env.is_main:
            return None
        return self.checkpoints.save(self.step, self.state_dict())

    # -- loop --------------------------------------------------------------------------------------------
    def autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.env.device.type, dtype=self.autocast_dtype)

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor | float]:
        """One optimiser step and the subclass's ``after_step``.

        Returns the step's values as they are, device tensors included: nothing here waits for the device, so the
        host queues the next step while this one runs. :meth:`metrics` turns them into logged numbers, which
        :meth:`fit` does only on log steps."""
        self.scheduler.step_update(self.step)
        self.net.train()
        out = self.compute_loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(out["loss"]).backward()
        self.scaler.unscale_(self.optimizer)
        params = [p for p in self.model.parameters() if p.grad is not None]
        clip = self.loop.optim.grad_clip
        grad_norm = torch.nn.utils.clip_grad_norm_(params, clip) if clip else None
        lr = max(group["lr"] for group in self.optimizer.param_groups)  # the top layer's under layer decay
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1
        if grad_norm is None and self.should_log():  # no clipping: the norm is only logged, so only made to log
            grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params])
        extra = self.after_step()
        values = {k: v.detach() for k, v in out.items()} | {"lr": lr} | extra
        return values | ({"grad_norm": grad_norm.detach()} if grad_norm is not None else {})

    @staticmethod
    def metrics(values: dict[str, torch.Tensor | float]) -> dict[str, float]:
        """A step's values as numbers, tensors averaged over ranks (a collective: every rank calls it)."""
        tensors = {k: v for k, v in values.items() if isinstance(v, torch.Tensor)}
        return {k: float(v) for k, v in values.items() if k not in tensors} | mean_over_ranks(tensors)

    def fit(self, batches: Iterable[dict[str, torch.Tensor]]) -> dict[str, float]:
        """Train until ``total_steps`` or the end of ``batches``, saving the step reached; returns the last
        step's metrics."""
        last: dict[str, float] = {}
        values: dict[str, torch.Tensor | float] = {}
        started, steps_since_log = time.perf_counter(), 0
        for batch in batches:
            if self.step >= self.loop.total_steps:
                break
            values = self.train_step(batch)
            steps_since_log += 1
            if self.should_log():
                last = self.metrics(values)
                elapsed = time.perf_counter() - started  # after the sync in metrics(): the steps really done
                last["clips_per_s"] = self.loop.global_batch_size * steps_since_log / max(elapsed, 1e-9)
                self.logger.log(self.step, last)
                started, steps_since_log, values = time.perf_counter(), 0, {}
            if self.step % self.loop.checkpoint_every == 0:
                self.save()
        if values:  # the stream ended after a step that was not logged
            last = self.metrics(values)
        if self.step > 0 and self.checkpoints.latest() != self.checkpoints.path(self.step):
            self.save()  # end of training or of the batch stream
        self.logger.close()
        return last
