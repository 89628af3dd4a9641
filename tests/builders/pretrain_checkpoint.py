"""Pre-training checkpoints (``.pt``, the trainer's layout) of a tiny FILS model with random weights: an encoder
with a language projector into the 384-wide MiniLM space the demo's captions are embedded in."""
from __future__ import annotations

from pathlib import Path

import torch

from fils_model.config import PretrainConfig
from fils_model.fils import FILSModel
from tests.builders.finetune_set import TINY

MINILM_DIM = 384


def save_random_pretrain_checkpoint(path: Path, seed: int, step: int = 0, **loss: float) -> Path:
    """A checkpoint file as the pretrain trainer writes it (``step``, ``model``, ``config``); ``loss`` overrides
    loss weights (``feature_weight=0, actclip_weight=0``: a pixel-only model without projector)."""
    cfg = PretrainConfig.model_validate({"model": TINY | {"text_dim": MINILM_DIM}, "loss": loss,
                                         "trainer": {"total_steps": 1, "global_batch_size": 2}})
    torch.manual_seed(seed)
    model = FILSModel(cfg.model, cfg.loss)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"step": step, "model": model.state_dict(), "config": cfg.model_dump(mode="json")}, path)
    return path
