"""Where a fine-tuning encoder comes from: a VideoMAE-layout folder or weights file (our export, or a hub
checkpoint such as ``MCG-NJU/videomae-base``), a pre-training checkpoint ``.pt``, or random weights."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

from fils_model.checkpoint import CheckpointError
from fils_model.config import ModelConfig
from fils_model.encoder import VideoEncoder
from fils_model.export import export_checkpoint, load_videomae_encoder
from fils_model.weights import WEIGHTS_NAME, weights_file

CONFIG_NAME = "config.json"


def model_config_from_videomae(config_json: Path, **overrides: object) -> ModelConfig:
    """Our :class:`ModelConfig` from an HF ``VideoMAEConfig`` ``config.json``."""
    hf = json.loads(Path(config_json).read_text())
    try:
        fields = dict(
            img_size=hf["image_size"], patch_size=hf["patch_size"], in_chans=hf.get("num_channels", 3),
            num_frames=hf["num_frames"], tubelet_size=hf["tubelet_size"], embed_dim=hf["hidden_size"],
            depth=hf["num_hidden_layers"], num_heads=hf["num_attention_heads"],
            mlp_ratio=hf["intermediate_size"] / hf["hidden_size"], norm_eps=hf.get("layer_norm_eps", 1e-12),
            qkv_bias=hf.get("qkv_bias", True),
        )
    except KeyError as exc:
        raise CheckpointError(f"{config_json} is not a VideoMAE config (no {exc}); expected the config.json "
                              "written with the model (transformers VideoMAEConfig)") from exc
    return ModelConfig.model_validate(fields | overrides)


def _videomae_paths(source: Path) -> tuple[Path, Path]:
    weights = weights_file(source)
    config = weights.parent / CONFIG_NAME
    if not weights.is_file():
        raise CheckpointError(f"encoder checkpoint {weights} not found: give a folder holding {WEIGHTS_NAME} + "
                              f"{CONFIG_NAME} (a VideoMAE export or hub download), a weights file, or a pretrain "
                              "checkpoint .pt")
    if not config.is_file():
        raise CheckpointError(f"{config} not found next to {weights}: the encoder's shape is read from it; copy "
                              "the model's config.json there")
    return weights, config


def load_pretrained_encoder(source: Path, drop_path: float = 0.0) -> tuple[VideoEncoder, ModelConfig]:
    """Encoder and its config from a VideoMAE-layout checkpoint or a pre-training checkpoint ``.pt``."""
    source = Path(source)
    if source.suffix == ".pt" and source.is_file():
        with tempfile.TemporaryDirectory(prefix="fils-encoder-") as tmp:
            export_checkpoint(source, Path(tmp))
            return load_pretrained_encoder(Path(tmp), drop_path)
    weights, config = _videomae_paths(source)
    cfg = model_config_from_videomae(config, drop_path=drop_path)
    encoder = VideoEncoder(cfg)
    load_videomae_encoder(encoder, weights)
    return encoder, cfg
