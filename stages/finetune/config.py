"""Settings of the `finetune` stage: which encoder, the recipe (:class:`FinetuneRecipe`) with an epoch-based
length, the labelled-clip data pipeline and how the run is launched (shared with pre-training)."""
from __future__ import annotations

import math

from pydantic import Field, model_validator

from fils_model.config import ModelConfig
from fils_model.finetune_config import FinetuneRecipe
from pipeline.clips.config import ClipStreamConfig, LoaderConfig
from pipeline.config.base import Section
from pipeline.config.launch import LaunchConfig
from pipeline.video.clip_config import AugmentConfig, SamplingConfig

# Fields of this section that are not part of the trainer's recipe.
_SECTION_ONLY = {"benchmark", "init", "model", "random_init_baseline", "epochs", "warmup_epochs", "data", "loader",
                 "launch"}


class FinetuneDataConfig(ClipStreamConfig):
    sampling: SamplingConfig = Field(
        default=SamplingConfig(), description="Frames of a training clip; the linear probe's one view per clip "
        "uses the same mode and stride (without jitter).",
    )
    augment: AugmentConfig = Field(
        default=AugmentConfig(), description="RandomResizedCrop + flip; set flip: false for SSv2 (left/right classes)."
    )
    shuffle_buffer: int = Field(default=500, ge=1, description="Raw samples (encoded clips, in memory) in each "
                                "loader stream's shuffle buffer.")
    feature_batch_size: int = Field(default=8, ge=1, description="Clips per forward pass when the linear probe "
                                    "computes its frozen features (speed and memory only).")


class FinetuneSection(FinetuneRecipe, Section):
    benchmark: str = Field(description="Name used in reports and the results table (ssv2, epic100, charades_ego, egtea).")
    init: str = Field(
        default="upstream", description="Encoder to start from: `upstream` (the committed pretrain stage's "
        "encoder), `random` (baseline; needs `model`), or a path to a VideoMAE-layout folder / weights file "
        "(e.g. a local MCG-NJU/videomae-base download) or a pretrain checkpoint .pt.",
    )
    model: ModelConfig | None = Field(default=None, description="Architecture for `init: random` only.")
    random_init_baseline: bool = Field(
        default=False, description="Also train the same recipe (same seed, data order and head) on a randomly "
        "initialised encoder of the same architecture, saved as `classifier_random_init/`: the evaluate stage scores "
        "it on the same clips and reports the pre-trained encoder's gain over it with intervals. Costs a second "
        "training run in the same unit and time limit (cheap for `linear_probe`); in `full` mode it keeps no model "
        "EMA (the EMA is a second result of the main run only).",
    )
    total_steps: int | None = Field(default=None, gt=0, description="Optimiser steps; or set epochs.")  # type: ignore[assignment]
    epochs: float | None = Field(default=None, gt=0, description="Passes over the training clips (replaces total_steps).")
    warmup_epochs: float | None = Field(default=None, ge=0, description="Replaces warmup_steps.")
    data: FinetuneDataConfig = FinetuneDataConfig()
    loader: LoaderConfig = LoaderConfig()
    launch: LaunchConfig = LaunchConfig()

    @model_validator(mode="after")
    def _check(self) -> "FinetuneSection":  # replaces FinetuneRecipe._check: steps are known only in resolve()
        if (self.epochs is None) == (self.total_steps is None):
            raise ValueError("set exactly one of finetune.epochs and finetune.total_steps")
        if self.warmup_epochs is not None and self.warmup_steps:
            raise ValueError("set at most one of finetune.warmup_epochs and finetune.warmup_steps")
        if self.random_init_baseline and self.init == "random":
            raise ValueError("finetune.random_init_baseline compares a pre-trained encoder with a random one, but "
                             "finetune.init is already 'random'; set one of them")
        if (self.init == "random") != (self.model is not None):
            raise ValueError("finetune.model is needed for, and only used by, `init: random`; a checkpoint's "
                             "architecture comes from its config.json")
        if self.head.task == "multi_label" and self.mix.label_smoothing:
            raise ValueError("label smoothing is not defined for the multi-label BCE head; set mix.label_smoothing: 0")
        return self

    def resolve(self, num_clips: int) -> FinetuneRecipe:
        """The trainer's recipe, with epochs turned into steps for ``num_clips`` training clips."""
        per_epoch = num_clips / self.global_batch_size
        total = self.total_steps or max(1, math.ceil(self.epochs * per_epoch))  # type: ignore[operator]
        warmup = self.warmup_steps if self.warmup_epochs is None else round(self.warmup_epochs * per_epoch)
        fields = self.model_dump(exclude=_SECTION_ONLY) | {"total_steps": total, "warmup_steps": min(warmup, total - 1)}
        return FinetuneRecipe.model_validate(fields)


SECTIONS = {"finetune": (FinetuneSection | None, Field(default=None, description="Needed by the finetune stage."))}
