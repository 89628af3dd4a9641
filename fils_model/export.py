"""Encoder export/import in HF ``transformers`` VideoMAE layout (``model.safetensors`` + ``config.json``).

``transformers.VideoMAEModel.from_pretrained(out_dir)`` loads an export directly; :func:`load_videomae_encoder`
initialises our encoder from such a directory or from a hub VideoMAE checkpoint file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file, save_file

from fils_model.checkpoint import CheckpointError, load_checkpoint
from fils_model.config import ModelConfig, PretrainConfig
from fils_model.encoder import VideoEncoder
from fils_model.language_head import export_language_head
from fils_model.videomae_layout import encoder_to_hf, hf_to_encoder
from fils_model.weights import WEIGHTS_NAME, weights_file


def videomae_config(cfg: ModelConfig):
    """HF ``VideoMAEConfig`` describing our encoder (final LayerNorm kept, hence ``use_mean_pooling=False``)."""
    from transformers import VideoMAEConfig

    return VideoMAEConfig(
        image_size=cfg.img_size,
        patch_size=cfg.patch_size,
        num_channels=cfg.in_chans,
        num_frames=cfg.num_frames,
        tubelet_size=cfg.tubelet_size,
        hidden_size=cfg.embed_dim,
        num_hidden_layers=cfg.depth,
        num_attention_heads=cfg.num_heads,
        intermediate_size=int(cfg.embed_dim * cfg.mlp_ratio),
        hidden_act="gelu",
        layer_norm_eps=cfg.norm_eps,
        qkv_bias=cfg.qkv_bias,
        use_mean_pooling=False,
        decoder_hidden_size=cfg.decoder_dim,
        decoder_num_hidden_layers=cfg.decoder_depth,
        decoder_num_attention_heads=cfg.decoder_heads,
        decoder_intermediate_size=int(cfg.decoder_dim * cfg.mlp_ratio),
    )


def export_videomae(encoder: VideoEncoder, cfg: ModelConfig, out_dir: Path) -> Path:
    """Write ``model.safetensors`` (HF ``VideoMAEModel`` keys) and ``config.json``; returns ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in encoder.state_dict().items()}
    save_file(encoder_to_hf(state), str(out_dir / WEIGHTS_NAME), metadata={"format": "pt"})
    videomae_config(cfg).save_pretrained(str(out_dir))
    return out_dir


def export_checkpoint(
    checkpoint: Path, out_dir: Path, which: Literal["student", "teacher"] = "student",
    language: dict[str, Any] | None = None,
) -> Path:
    """Export the student (default, what fine-tuning uses) or EMA-teacher encoder of a training checkpoint, with
    its language projector (``fils_model.language_head``; ``language``: extra fields of its description)."""
    state = load_checkpoint(checkpoint)
    cfg = PretrainConfig.model_validate(state["config"]).model
    prefix = "encoder." if which == "student" else "teacher.encoder."
    encoder = VideoEncoder(cfg)
    weights = {k.removeprefix(prefix): v for k, v in state["model"].items() if k.startswith(prefix)}
    if not weights:
        raise CheckpointError(f"checkpoint {checkpoint} holds no {which} encoder (no '{prefix}*' keys)")
    encoder.load_state_dict(weights)
    export_videomae(encoder, cfg, out_dir)
    export_language_head(state, prefix.removesuffix("encoder."), out_dir, language)
    return out_dir


def load_videomae_encoder(encoder: VideoEncoder, source: Path) -> None:
    """Initialise ``encoder`` from an HF VideoMAE directory or weights file (.safetensors / .bin / .pt)."""
    source = Path(source)
    path = weights_file(source)
    if not path.is_file():
        raise CheckpointError(f"VideoMAE weights {path} not found; download the model or fix the path")
    state = load_file(str(path)) if path.suffix == ".safetensors" else torch.load(path, map_location="cpu", weights_only=True)
    try:
        weights = hf_to_encoder(state)
        encoder.load_state_dict(weights)
    except (KeyError, RuntimeError) as exc:
        raise CheckpointError(
            f"{path} is not a VideoMAE encoder matching this model config ({exc}); check size/patch/frames"
        ) from exc
