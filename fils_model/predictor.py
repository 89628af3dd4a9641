"""Predictor (VideoMAE decoder): visible tokens + mask tokens with their positions -> masked-token states."""

from __future__ import annotations

import torch
from timm.layers import trunc_normal_
from torch import nn

from fils_model.block import BlockStack, init_weights
from fils_model.config import ModelConfig
from fils_model.position import sincos_table
from fils_model.token_index import TokenSplit, gather_tokens


class Predictor(nn.Module):
    """Returns the block outputs (before any norm) of the masked tokens, ``(B, N_masked, decoder_dim)``.

    The sequence is ``[visible ; masked]``, each part in ascending position order, so output ``i`` belongs to
    the ``i``-th masked position in ascending order -- the same order as the teacher's targets.
    (FILS' released code indexed the concatenated sequence with the original mask instead: bug B1.)
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.encoder_to_decoder = nn.Linear(cfg.embed_dim, cfg.decoder_dim, bias=False)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, cfg.decoder_dim))
        self.register_buffer("pos_embed", sincos_table(cfg.num_patches, cfg.decoder_dim), persistent=False)
        self.blocks = BlockStack(
            cfg.decoder_depth, cfg.decoder_dim, cfg.decoder_heads, cfg.mlp_ratio, cfg.qkv_bias, 0.0, cfg.norm_eps
        )
        self.blocks.checkpointing = "predictor" in cfg.activation_checkpointing
        init_weights(self)
        trunc_normal_(self.mask_token, std=0.02)

    def sequence(self, visible: torch.Tensor, split: TokenSplit) -> torch.Tensor:
        """Block outputs of the whole ``[visible ; masked]`` sequence, ``(B, N, decoder_dim)``."""
        x = self.encoder_to_decoder(visible)
        pos = self.pos_embed.to(x.dtype).expand(x.shape[0], -1, -1)
        masked = self.mask_token.to(x.dtype) + gather_tokens(pos, split.masked)
        return self.blocks(torch.cat([x + gather_tokens(pos, split.visible), masked], dim=1))

    def forward(self, visible: torch.Tensor, split: TokenSplit) -> torch.Tensor:
        return self.sequence(visible, split)[:, visible.shape[1] :]
