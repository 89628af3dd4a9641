"""Video classifier for fine-tuning: the VideoMAE encoder, mean-pooled tokens, LayerNorm, one linear layer per
head (docs/method.md). Saved as ``model.safetensors`` + ``classifier.json`` so evaluation needs no training code."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from fils_model.checkpoint import CheckpointError, load_model_state
from fils_model.config import ModelConfig
from fils_model.encoder import VideoEncoder
from fils_model.finetune_config import HeadConfig
from fils_model.weights import WEIGHTS_NAME

META_NAME = "classifier.json"


def linear_heads(dim: int, head: HeadConfig) -> nn.ModuleDict:
    """One ``nn.Linear(dim, width)`` per head output: trunc-normal(0.02) x ``head.init_scale`` weights, zero biases
    (VideoMAE). Shared by the classifier and the probes so a probe's heads start where a classifier's would."""
    heads = nn.ModuleDict({name: nn.Linear(dim, width) for name, width in head.outputs().items()})
    for linear in heads.values():
        nn.init.trunc_normal_(linear.weight, std=0.02)
        linear.weight.data.mul_(head.init_scale)
        nn.init.zeros_(linear.bias)
    return heads


class VideoClassifier(nn.Module):
    """``forward(video)`` -> ``{head name: logits}``; ``features`` + ``classify`` split it for linear probing."""

    def __init__(self, cfg: ModelConfig, head: HeadConfig) -> None:
        super().__init__()
        self.cfg, self.head_cfg = cfg, head
        self.encoder = VideoEncoder(cfg)
        self.fc_norm = nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps)
        self.heads = linear_heads(cfg.embed_dim, head)

    def features(self, video: torch.Tensor) -> torch.Tensor:
        """Mean of the encoder's output tokens, ``(B, D)``."""
        return self.encoder(video).mean(dim=1)

    def classify(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        pooled = self.fc_norm(features)
        return {name: linear(pooled) for name, linear in self.heads.items()}

    def forward(self, video: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.classify(self.features(video))

    def freeze_encoder(self) -> None:
        """Linear probe: only ``fc_norm`` and the heads train."""
        self.encoder.requires_grad_(False)
        self.encoder.eval()

    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Layer ids for timm's layer-wise lr decay: patch embed 0, block i -> i + 1, the rest last."""
        return {"stem": r"^encoder\.patch_embed", "blocks": [(r"^encoder\.blocks\.(\d+)", None),
                                                             (r"^encoder\.norm", (99999,))]}


def save_classifier(model: VideoClassifier, out_dir: Path, extra: dict[str, Any] | None = None) -> Path:
    """Write the weights and ``classifier.json`` (model and head config plus ``extra``) to ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out_dir / WEIGHTS_NAME), metadata={"format": "pt"})
    meta = {"model": model.cfg.model_dump(mode="json"), "head": model.head_cfg.model_dump(mode="json"), **(extra or {})}
    (out_dir / META_NAME).write_text(json.dumps(meta, indent=2, sort_keys=True))
    return out_dir


def is_classifier_dir(path: Path) -> bool:
    return (Path(path) / META_NAME).is_file()


def load_classifier(directory: Path) -> tuple[VideoClassifier, dict[str, Any]]:
    """A saved classifier and its ``classifier.json``; errors name the folder and what is wrong."""
    directory = Path(directory)
    meta_path, weights = directory / META_NAME, directory / WEIGHTS_NAME
    for path in (meta_path, weights):
        if not path.is_file():
            raise CheckpointError(f"classifier file {path} not found; run the finetune stage (or point at its "
                                  "output folder, which holds model.safetensors and classifier.json)")
    meta = json.loads(meta_path.read_text())
    model = VideoClassifier(ModelConfig.model_validate(meta["model"]), HeadConfig.model_validate(meta["head"]))
    load_model_state(model, load_file(str(weights)), weights)
    return model, meta
