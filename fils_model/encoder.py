"""Video ViT encoder (VideoMAE architecture) that runs on the visible tokens only."""

from __future__ import annotations

import torch
from torch import nn

from fils_model.block import BlockStack, init_weights
from fils_model.config import ModelConfig
from fils_model.position import sincos_table
from fils_model.token_index import gather_tokens
from fils_model.tube_embed import TubeEmbed


class VideoEncoder(nn.Module):
    """Tube embedding + fixed sin-cos positions + pre-norm blocks + final LayerNorm.

    ``visible`` holds the positions of the tokens to encode (:class:`~fils_model.token_index.TokenSplit`); all
    tokens are encoded without it.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.patch_embed = TubeEmbed(cfg.in_chans, cfg.embed_dim, cfg.tubelet_size, cfg.patch_size)
        self.register_buffer("pos_embed", sincos_table(cfg.num_patches, cfg.embed_dim), persistent=False)
        self.blocks = BlockStack(
            cfg.depth, cfg.embed_dim, cfg.num_heads, cfg.mlp_ratio, cfg.qkv_bias, cfg.drop_path, cfg.norm_eps
        )
        self.blocks.checkpointing = "encoder" in cfg.activation_checkpointing
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps)
        init_weights(self)

    def embed(self, video: torch.Tensor) -> torch.Tensor:
        """Tube-embedding tokens ``(B, N, D)`` before position embedding (FILS' code-faithful targets)."""
        return self.patch_embed(video)

    def encode(self, tokens: torch.Tensor, visible: torch.Tensor | None = None) -> torch.Tensor:
        """Encode tube-embedding tokens; returns ``(B, n_visible, D)`` (all N when ``visible`` is None)."""
        x = tokens + self.pos_embed.to(tokens.dtype)
        if visible is not None:
            x = gather_tokens(x, visible)
        return self.norm(self.blocks(x))

    def forward(self, video: torch.Tensor, visible: torch.Tensor | None = None) -> torch.Tensor:
        return self.encode(self.embed(video), visible)
