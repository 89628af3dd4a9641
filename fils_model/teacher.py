"""EMA teacher: a frozen copy of the student encoder and language projector that produces FR targets."""

from __future__ import annotations

import copy

import torch
from torch import nn

from fils_model.ema import ema_update
from fils_model.encoder import VideoEncoder
from fils_model.losses.feature import language_targets
from fils_model.projector import LanguageProjector
from fils_model.token_index import gather_tokens


class Teacher(nn.Module):
    """Never receives gradients and always runs in eval mode; moved only by :meth:`update`."""

    def __init__(self, encoder: VideoEncoder, projector: LanguageProjector, source: str = "encoder") -> None:
        super().__init__()
        self.encoder = copy.deepcopy(encoder).requires_grad_(False)
        self.projector = copy.deepcopy(projector).requires_grad_(False)
        self.source = source
        self.train(False)

    def train(self, mode: bool = True) -> "Teacher":
        return super().train(False)

    @torch.no_grad()
    def update(self, encoder: VideoEncoder, projector: LanguageProjector, momentum: float) -> None:
        ema_update(self.encoder, encoder, momentum)
        ema_update(self.projector, projector, momentum)

    @torch.no_grad()
    def forward(self, video: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
        """Targets ``(B, n_masked, text_dim)`` for the tokens at positions ``masked`` (ascending).

        ``source="encoder"``: the teacher encoder sees the full, unmasked clip (paper intent, D1);
        ``source="tube_embedding"``: tube-embedding tokens, as in FILS' released code (B3).
        """
        tokens = self.encoder.embed(video)
        if self.source == "encoder":
            tokens = self.encoder.encode(tokens)
        return language_targets(self.projector(gather_tokens(tokens, masked)))
