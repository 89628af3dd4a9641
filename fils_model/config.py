"""Pydantic configuration of the FILS model, losses, optimiser and trainer.

The foundation embeds :class:`PretrainConfig` under the ``pretrain`` section of its YAML tree; every model
here forbids unknown keys so that typos fail loudly instead of silently falling back to defaults.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fils_model.masking import masked_tokens

Size = Literal["tiny", "small", "base", "large"]
CheckpointedPart = Literal["encoder", "predictor"]

# Encoder and predictor widths per size. "tiny" is deliberately minute so CPU tests run in seconds;
# small/base/large follow ViT-S/B/L with the FILS/VideoMAE 384-wide predictor.
SIZE_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(embed_dim=64, depth=2, num_heads=2, decoder_dim=32, decoder_depth=2, decoder_heads=2),
    "small": dict(embed_dim=384, depth=12, num_heads=6, decoder_dim=384, decoder_depth=6, decoder_heads=6),
    "base": dict(embed_dim=768, depth=12, num_heads=12, decoder_dim=384, decoder_depth=6, decoder_heads=6),
    "large": dict(embed_dim=1024, depth=24, num_heads=16, decoder_dim=384, decoder_depth=6, decoder_heads=6),
}


# Settings of a PretrainConfig that say how a run is computed, not what it computes (activation recompute; compiled
# graphs compute the same up to floating-point reordering): a run may change them between attempts.
COMPUTE_ONLY_SETTINGS = ("model.activation_checkpointing", "trainer.compile")


class StrictConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(StrictConfig):
    """Encoder, predictor and projector shapes. Fields left unset are filled from the ``size`` preset."""

    size: Size = "base"
    img_size: int = Field(224, gt=0)
    num_frames: int = Field(16, gt=0)
    patch_size: int = Field(16, gt=0)
    tubelet_size: int = Field(2, gt=0)
    in_chans: int = Field(3, gt=0)
    embed_dim: int = Field(0, ge=0, description="0 = take from size preset")
    depth: int = Field(0, ge=0)
    num_heads: int = Field(0, ge=0)
    mlp_ratio: float = Field(4.0, gt=0)
    qkv_bias: bool = True
    norm_eps: float = Field(1e-6, gt=0)
    drop_path: float = Field(0.0, ge=0, lt=1)
    decoder_dim: int = Field(0, ge=0)
    decoder_depth: int = Field(0, ge=0)
    decoder_heads: int = Field(0, ge=0)
    text_dim: int = Field(512, gt=0, description="width of the caption embeddings (ViFi-CLIP: 512)")
    projector_hidden_dim: int = Field(0, ge=0, description="0 = 4 x embed_dim (FILS: 768->3072->512)")
    target_source: Literal["encoder", "tube_embedding"] = Field(
        "encoder",
        description="teacher targets from the teacher encoder on the full clip (paper intent, D1) or from the "
        "tube embedding (released code, B3)",
    )
    actclip_source: Literal["encoder", "tube_embedding"] = Field(
        "encoder",
        description="student tokens pooled by ActCLIP: visible encoder outputs (D1) or tube embeddings (code)",
    )
    mask_ratio: float = Field(0.9, gt=0, lt=1)
    activation_checkpointing: tuple[CheckpointedPart, ...] = Field(
        (),
        description="parts whose blocks recompute their activations in the backward pass instead of keeping them "
        "(memory for compute; the outputs are the same). At 90 % masking the predictor runs on every token and the "
        "encoder on a tenth of them, so [predictor] saves most of the memory; true = both, false = none",
    )

    @field_validator("activation_checkpointing", mode="before")
    @classmethod
    def _parts_of_bool(cls, value: Any) -> Any:
        if isinstance(value, bool):
            return ("encoder", "predictor") if value else ()
        return value

    @model_validator(mode="after")
    def _fill_and_check(self) -> "ModelConfig":
        preset = SIZE_PRESETS[self.size]
        updates = {k: v for k, v in preset.items() if getattr(self, k) == 0}
        if self.projector_hidden_dim == 0:
            updates["projector_hidden_dim"] = 4 * (updates.get("embed_dim") or self.embed_dim)
        for key, value in updates.items():
            object.__setattr__(self, key, value)
        if self.img_size % self.patch_size:
            raise ValueError(f"img_size {self.img_size} must be a multiple of patch_size {self.patch_size}")
        if self.num_frames % self.tubelet_size:
            raise ValueError(f"num_frames {self.num_frames} must be a multiple of tubelet_size {self.tubelet_size}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} must be divisible by num_heads {self.num_heads}")
        if self.decoder_dim % self.decoder_heads:
            raise ValueError(f"decoder_dim {self.decoder_dim} must be divisible by decoder_heads {self.decoder_heads}")
        if int(self.mask_ratio * self.grid[1] * self.grid[2]) == 0:
            raise ValueError(f"mask_ratio {self.mask_ratio} masks no patch on a {self.grid[1]}x{self.grid[2]} grid")
        return self

    @property
    def grid(self) -> tuple[int, int, int]:
        """Token grid (time, height, width)."""
        side = self.img_size // self.patch_size
        return self.num_frames // self.tubelet_size, side, side

    @property
    def num_patches(self) -> int:
        t, h, w = self.grid
        return t * h * w

    @property
    def num_masked(self) -> int:
        """Masked tokens per clip (tube masking: the same spatial patches in every time slice)."""
        return masked_tokens(self.grid, self.mask_ratio)


class LossConfig(StrictConfig):
    """Loss weights and ActCLIP options (defaults: final FILS runs, ActCLIP 1 + feature 1 + pixel 0)."""

    actclip_weight: float = Field(1.0, ge=0)
    feature_weight: float = Field(1.0, ge=0)
    pixel_weight: float = Field(0.0, ge=0)
    actclip_pooling: Literal["patch-average", "patch", "average"] = "patch-average"
    smooth_l1_beta: float = Field(1.0, gt=0)
    temperature_init: float = Field(0.07, gt=0)
    max_logit_scale: float = Field(100.0, gt=1)
    gather_negatives: bool = True
    actclip_normalize: bool = Field(
        True, description="L2-normalise both sides of ActCLIP (D5); False: raw dot products (released code, B4)"
    )
    actclip_fallback: Literal["all_tokens", "released_code"] = Field(
        "all_tokens",
        description="pooling of a clip with no token in its action area: all candidate tokens, or tokens "
        "0..1535 as the released code hard-codes for ViT-B 16x224 (B5)",
    )
    feature_pairing: Literal["aligned", "released_code"] = Field(
        "aligned",
        description="predictions paired with the target of their own token (B1 fixed), or the released code's "
        "decoder-order predictions indexed with the original-order mask (B1)",
    )
    norm_pix_loss: bool = True

    @model_validator(mode="after")
    def _any_loss(self) -> "LossConfig":
        if self.actclip_weight == self.feature_weight == self.pixel_weight == 0:
            raise ValueError("all loss weights are 0: set at least one of actclip/feature/pixel_weight > 0")
        return self


class AdamWConfig(StrictConfig):
    """AdamW and its warm-up + cosine learning-rate schedule, shared by pre-training, fine-tuning and the probes.
    Every learning rate here is per 256 clips and scaled by the global batch (VideoMAE's linear scaling rule)."""

    base_lr: float = Field(1.5e-4, gt=0, description="Peak lr per 256 clips (x global_batch/256).")
    min_lr: float = Field(1e-5, ge=0, description="Final lr of the cosine per 256 clips (x global_batch/256).")
    warmup_start_lr: float = Field(1e-6, ge=0, description="First warm-up lr per 256 clips (x global_batch/256).")
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = Field(1e-8, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    grad_clip: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _check_lrs(self) -> "AdamWConfig":
        if self.min_lr > self.base_lr:
            raise ValueError(f"min_lr {self.min_lr} exceeds base_lr {self.base_lr}")
        return self


class OptimConfig(AdamWConfig):
    """Pre-training: AdamW, its schedule and the teacher's EMA momentum schedule."""

    warmup_steps: int = Field(0, ge=0)
    ema_start: float = Field(0.996, ge=0, le=1)
    ema_end: float = Field(1.0, ge=0, le=1)
    ema_schedule: Literal["linear", "cosine"] = "linear"
    ema_update: Literal["step", "epoch"] = Field(
        "step",
        description="teacher EMA update every optimiser step (D4), or once per epoch with the momentum schedule "
        "indexed by epoch, as the released code does (B2; needs trainer.steps_per_epoch)",
    )

    @model_validator(mode="after")
    def _check(self) -> "OptimConfig":
        if self.ema_end < self.ema_start:
            raise ValueError(f"ema_end {self.ema_end} must be >= ema_start {self.ema_start}")
        return self


class TrainerConfig(StrictConfig):
    """Loop length, precision, logging and checkpoint cadence."""

    total_steps: int = Field(gt=0)
    global_batch_size: int = Field(gt=0, description="clips per optimiser step over all ranks")
    seed: int = 0
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 on GPU, fp32 on CPU; fp16: autocast with a GradScaler (released code)"
    )
    steps_per_epoch: int | None = Field(
        None, gt=0, description="optimiser steps per pass over the data (filled in by the pretrain stage)"
    )
    checkpoint_every: int = Field(1000, gt=0)
    keep_every: int = Field(10, gt=0, description="keep every K-th checkpoint besides the latest")
    log_every: int = Field(10, gt=0)
    diagnostics_every: int = Field(50, gt=0, description="collapse diagnostics (std, effective rank) cadence")
    tensorboard: bool = True
    compile: bool = Field(
        False, description="torch.compile the student encoder, predictor and teacher (no graph breaks; the first "
        "steps pay the compilation)",
    )


class PretrainConfig(StrictConfig):
    """Everything the ``pretrain`` stage hands to :class:`fils_model.pretrain_trainer.PretrainTrainer`."""

    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    optim: OptimConfig = OptimConfig()
    trainer: TrainerConfig

    @model_validator(mode="after")
    def _check(self) -> "PretrainConfig":
        if self.optim.warmup_steps >= self.trainer.total_steps:
            raise ValueError(
                f"optim.warmup_steps {self.optim.warmup_steps} must be < trainer.total_steps {self.trainer.total_steps}"
            )
        if self.optim.ema_update == "epoch" and self.trainer.steps_per_epoch is None:
            raise ValueError("optim.ema_update 'epoch' needs trainer.steps_per_epoch (set pretrain.epochs)")
        return self
