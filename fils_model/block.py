"""Pre-norm Transformer block and a stack of them with optional activation checkpointing."""

from __future__ import annotations

import torch
from timm.layers import DropPath, Mlp
from torch import nn
from torch.utils.checkpoint import checkpoint

from fils_model.attention import Attention


class Block(nn.Module):
    """``x + attn(norm1(x))`` then ``x + mlp(norm2(x))`` (ViT / VideoMAE block)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class BlockStack(nn.ModuleList):
    """Sequential blocks; ``checkpointing`` trades recompute for activation memory while training."""

    def __init__(
        self,
        depth: int,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
        norm_eps: float = 1e-6,
    ) -> None:
        rates = torch.linspace(0, drop_path, depth).tolist() if depth else []
        super().__init__(Block(dim, num_heads, mlp_ratio, qkv_bias, rate, norm_eps) for rate in rates)
        self.checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self:
            if self.checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x


def init_weights(module: nn.Module) -> None:
    """VideoMAE init: xavier-uniform linears with zero bias, unit LayerNorms."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
