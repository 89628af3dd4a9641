"""Language-space projector: MLP from visual width to the caption-embedding width (FILS ``v2t_mapping``)."""

from __future__ import annotations

from timm.layers import Mlp
from torch import nn

from fils_model.block import init_weights


class LanguageProjector(Mlp):
    """``Linear -> GELU -> Linear``; shared by ActCLIP and the feature-prediction path (same weights)."""

    def __init__(self, in_dim: int, hidden_dim: int, text_dim: int) -> None:
        super().__init__(in_dim, hidden_dim, text_dim)
        init_weights(self)


def feature_head(decoder_dim: int, embed_dim: int) -> nn.Module:
    """Predictor states -> encoder width (FILS ``t_mapping``, 384 -> 1536 -> 768) before the shared projector."""
    head = Mlp(decoder_dim, 4 * decoder_dim, embed_dim)
    init_weights(head)
    return head
