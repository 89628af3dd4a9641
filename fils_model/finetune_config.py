"""Pydantic recipe of a fine-tuning run (docs/method.md): heads, AdamW + layer decay, schedule,
Mixup/CutMix, label smoothing, model EMA. Learning rates are per 256 clips and scaled by the global batch."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from fils_model.config import AdamWConfig, StrictConfig

Task = Literal["single_label", "multi_label", "epic_action", "epic_verb_noun"]
Mode = Literal["full", "linear_probe"]


class HeadConfig(StrictConfig):
    """What the classifier predicts.

    ``single_label``: one softmax head (SSv2 174, EGTEA 106); ``multi_label``: one sigmoid head trained with BCE
    (Charades-Ego 157); ``epic_action``: one action head (EK-100 3806) whose verb/noun scores come from
    marginalising the action probabilities (D15); ``epic_verb_noun``: separate verb and noun heads.
    """

    task: Task = "single_label"
    num_classes: int = Field(0, ge=0, description="Classes of the single/multi-label or action head.")
    num_verbs: int = Field(0, ge=0, description="EK-100 verbs (97); epic tasks only.")
    num_nouns: int = Field(0, ge=0, description="EK-100 nouns (300); epic tasks only.")
    init_scale: float = Field(0.001, gt=0, description="Head weights: trunc-normal(0.02) x init_scale (VideoMAE).")

    @model_validator(mode="after")
    def _sizes(self) -> "HeadConfig":
        if self.task != "epic_verb_noun" and self.num_classes < 2:
            raise ValueError(f"head.num_classes must be >= 2 for task {self.task!r}, got {self.num_classes}")
        if self.task.startswith("epic") and (self.num_verbs < 1 or self.num_nouns < 1):
            raise ValueError(f"task {self.task!r} needs head.num_verbs and head.num_nouns (EK-100: 97 and 300)")
        return self

    def outputs(self) -> dict[str, int]:
        """Head name -> width."""
        if self.task == "epic_verb_noun":
            return {"verb": self.num_verbs, "noun": self.num_nouns}
        return {"action" if self.task == "epic_action" else "label": self.num_classes}


class FinetuneOptim(AdamWConfig):
    """AdamW with layer-wise lr decay; defaults of the VideoMAE fine-tuning recipe."""

    base_lr: float = Field(1.5e-3, gt=0, description="Peak lr per 256 clips (x global_batch/256).")
    min_lr: float = Field(1e-6, ge=0, description="Final lr of the cosine per 256 clips (x global_batch/256).")
    betas: tuple[float, float] = (0.9, 0.999)
    layer_decay: float = Field(0.75, gt=0, le=1, description="lr x decay^(depth+1-layer); patch embed = layer 0.")


class MixConfig(StrictConfig):
    """timm Mixup/CutMix (mode 'batch') and label smoothing; 0/0 switches mixing off."""

    mixup: float = Field(0.8, ge=0, description="Mixup alpha.")
    cutmix: float = Field(1.0, ge=0, description="CutMix alpha (the box is cut from every frame).")
    prob: float = Field(1.0, ge=0, le=1)
    switch_prob: float = Field(0.5, ge=0, le=1)
    label_smoothing: float = Field(0.1, ge=0, lt=1)

    @property
    def enabled(self) -> bool:
        return self.prob > 0 and (self.mixup > 0 or self.cutmix > 0)


class FinetuneRecipe(StrictConfig):
    """Everything :class:`fils_model.finetune_trainer.FinetuneTrainer` needs besides the model and the data."""

    head: HeadConfig
    mode: Mode = "full"
    drop_path: float = Field(0.1, ge=0, lt=1)
    optim: FinetuneOptim = FinetuneOptim()
    mix: MixConfig = MixConfig()
    model_ema: bool = Field(True, description="Also keep an EMA of the weights (timm ModelEmaV3), saved and "
                            "scored as a second result next to the trained weights.")
    ema_decay: float = Field(0.9999, gt=0, lt=1, description="EMA decay (the ceiling when ema_warmup).")
    ema_warmup: bool = Field(True, description="timm's decay warm-up, 1 - (1 + step)^(-2/3) capped at ema_decay, so "
                             "the EMA of a short schedule is not dominated by its first steps.")
    total_steps: int = Field(gt=0)
    warmup_steps: int = Field(0, ge=0)
    global_batch_size: int = Field(gt=0)
    seed: int = 0
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto: bf16 on GPU, fp32 on CPU.")
    checkpoint_every: int = Field(1000, gt=0)
    log_every: int = Field(10, gt=0)

    @model_validator(mode="after")
    def _check(self) -> "FinetuneRecipe":
        if self.warmup_steps >= self.total_steps:
            raise ValueError(f"warmup_steps {self.warmup_steps} must be < total_steps {self.total_steps}")
        if self.head.task == "multi_label" and self.mix.label_smoothing:
            raise ValueError("label smoothing is not defined for the multi-label BCE head; set mix.label_smoothing: 0")
        return self
