"""Settings of the `pretrain` stage: the model's `PretrainConfig` (model, loss, optim, trainer) plus the data
pipeline, the epoch-based schedule and how the run is launched.

`data`, `model`, `loss`, `optim`, `trainer` and the epoch settings define the result and enter the stage's
fingerprint; `loader` and `launch` only say how it is computed and do not (the sample order does depend on
ranks x loader workers, so keep them fixed while a run is resumed if it must be bit-exact).
"""
from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, model_validator

from fils_model.config import LossConfig, ModelConfig, OptimConfig, PretrainConfig, TrainerConfig
from pipeline.clips.config import ClipStreamConfig, LoaderConfig
from pipeline.config.base import Section
from pipeline.config.launch import LaunchConfig
from stages.pretrain.token_mask import BoxRule

# The released code's behaviour, point by point (docs/method.md, B1-B5): a reproduction aid, never the default.
RELEASED_CODE_PRESET: dict[str, dict[str, Any]] = {
    "model": {"target_source": "tube_embedding", "actclip_source": "tube_embedding"},  # B3
    "loss": {"feature_pairing": "released_code",  # B1
             "actclip_normalize": False, "gather_negatives": False,  # B4
             "actclip_fallback": "released_code"},  # B5
    "optim": {"ema_update": "epoch", "grad_clip": None},  # B2
    "trainer": {"precision": "fp16"},  # AMP fp16 + GradScaler
    "data": {"box_rule": "released_code"},  # B5
}


def _under(preset: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """``given`` with the preset's values filled in where it sets nothing (what the user writes wins)."""
    merged = dict(given)
    for key, value in preset.items():
        if isinstance(value, dict):
            merged[key] = _under(value, dict(given.get(key) or {}))
        else:
            merged.setdefault(key, value)
    return merged


class PretrainDataConfig(ClipStreamConfig):
    missing_action_area: Literal["centre", "skip"] = Field(
        default="centre", description="Clip without a usable action box (no row, status `failed`): use the centre "
        "box covering the middle 50 % (SSv2 loader) or skip the clip.",
    )
    box_rule: BoxRule = Field(
        default="any_overlap", description="Action box -> tokens: any-overlap (D11) or the released code's "
        "off-by-one rule that drops the last covered column and row (B5).",
    )
    seed: int = Field(default=0, description="Seed of shard order, shuffling, frame sampling, crops and masks.")


class PretrainLaunchConfig(LaunchConfig):
    max_steps_per_attempt: int | None = Field(
        default=None, gt=0, description="Stop (with a checkpoint) after this many steps; the stage then fails and "
        "the next run resumes. For time-limited jobs and tests.",
    )


class TrainerSettings(TrainerConfig):
    total_steps: int | None = Field(default=None, gt=0, description="Optimiser steps; or set pretrain.epochs.")


class PretrainSection(Section):
    variant: Literal["fils", "released_code"] = Field(
        default="fils", description="`released_code` fills in the released code's behaviour (bugs B1-B5, per-GPU "
        "negatives, fp16) wherever the config sets nothing: to reproduce its numbers or attribute a gap to them, "
        "never for new results (docs/method.md, B1-B5).",
    )
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    optim: OptimConfig = OptimConfig()
    trainer: TrainerSettings
    epochs: float | None = Field(
        default=None, gt=0, description="Training length in passes over the usable clips of the split "
        "(steps = ceil(epochs x clips / global_batch_size)); replaces trainer.total_steps.",
    )
    warmup_epochs: float | None = Field(default=None, ge=0, description="Replaces optim.warmup_steps.")
    data: PretrainDataConfig = PretrainDataConfig()
    loader: LoaderConfig = LoaderConfig()
    launch: PretrainLaunchConfig = PretrainLaunchConfig()

    @model_validator(mode="before")
    @classmethod
    def _apply_variant(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("variant") == "released_code":
            return _under(RELEASED_CODE_PRESET, data)
        return data

    @model_validator(mode="after")
    def _one_length(self) -> "PretrainSection":
        if (self.epochs is None) == (self.trainer.total_steps is None):
            raise ValueError("set exactly one of pretrain.epochs and pretrain.trainer.total_steps")
        if self.warmup_epochs is not None and self.optim.warmup_steps:
            raise ValueError("set at most one of pretrain.warmup_epochs and pretrain.optim.warmup_steps")
        if self.warmup_epochs is not None and self.epochs is None:
            raise ValueError("pretrain.warmup_epochs needs pretrain.epochs (or give optim.warmup_steps)")
        return self

    def resolve(self, num_clips: int) -> PretrainConfig:
        """The trainer's config, with epochs turned into steps for ``num_clips`` usable clips."""
        batch = self.trainer.global_batch_size
        steps_per_epoch = num_clips / batch
        total = self.trainer.total_steps or math.ceil(self.epochs * steps_per_epoch)  # type: ignore[operator]
        warmup = self.optim.warmup_steps if self.warmup_epochs is None else round(self.warmup_epochs * steps_per_epoch)
        trainer = TrainerConfig(**(self.trainer.model_dump() | {
            "total_steps": max(1, total),
            "steps_per_epoch": self.trainer.steps_per_epoch or max(1, num_clips // batch)}))
        optim = self.optim.model_copy(update={"warmup_steps": warmup})
        return PretrainConfig(model=self.model, loss=self.loss, optim=optim, trainer=trainer)


SECTIONS = {"pretrain": (PretrainSection | None, Field(default=None, description="Needed by the pretrain stage."))}
