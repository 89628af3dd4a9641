"""The language side of a pre-trained FILS encoder: the projector that maps its tokens into the caption-embedding
space (trained by ActCLIP and the feature-prediction loss), kept next to the VideoMAE-layout export.

Zero-shot classification and video-text retrieval score a clip by the cosine between its language embedding and
text embeddings. A clip's language embedding is what ActCLIP compares with its caption at training time, minus
the action area (unknown at test time): the projected tokens averaged over the whole clip, L2-normalised. The
export is two extra files in the encoder folder (``transformers`` ignores them):
``language_projector.safetensors`` and ``language_projector.json`` (widths, token source, learned logit scale,
training step and, when the pretrain stage wrote it, the identity of the text encoder whose space it is).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from fils_model.checkpoint import CheckpointError, load_checkpoint
from fils_model.config import PretrainConfig
from fils_model.projector import LanguageProjector

PROJECTOR_WEIGHTS = "language_projector.safetensors"
PROJECTOR_META = "language_projector.json"


class LanguageHead(nn.Module):
    """``forward(tokens (B, N, D)) -> (B, text_dim)`` unit vectors: projected tokens, averaged, normalised.

    ``source`` says which tokens the projector was trained on: ``encoder`` (the encoder's output) or
    ``tube_embedding`` (the tube embedding, as in FILS' released code); :meth:`tokens_of` picks them.
    """

    def __init__(self, projector: LanguageProjector, meta: dict[str, Any]) -> None:
        super().__init__()
        self.projector = projector
        self.meta = meta

    @property
    def source(self) -> str:
        return self.meta.get("source", "encoder")

    @property
    def logit_scale(self) -> float:
        """ActCLIP's learned inverse temperature (``exp`` of its parameter): the softmax scale of zero-shot scores;
        CLIP's ceiling, 100, for a projector trained by feature prediction alone (no ActCLIP, no scale)."""
        scale = self.meta.get("logit_scale")
        return 100.0 if scale is None else float(scale)

    @property
    def text_dim(self) -> int:
        return int(self.meta["text_dim"])

    def tokens_of(self, embedded: torch.Tensor, encoded: torch.Tensor) -> torch.Tensor:
        return embedded if self.source == "tube_embedding" else encoded

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.projector(tokens).float().mean(1), dim=-1)


def _from_state(state: dict[str, Any], prefix: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """Projector weights and description of a training checkpoint's state (``prefix``: ``""`` student,
    ``"teacher."`` EMA teacher); None when the model has no projector (a pixel-only baseline)."""
    model = state["model"]
    weights = {k.removeprefix(f"{prefix}projector."): v.detach().cpu().contiguous()
               for k, v in model.items() if k.startswith(f"{prefix}projector.")}
    if not weights:
        return None
    cfg = PretrainConfig.model_validate(state["config"]).model
    scale = model.get("actclip.logit_scale")
    return weights, {"embed_dim": cfg.embed_dim, "hidden_dim": cfg.projector_hidden_dim, "text_dim": cfg.text_dim,
                     "source": cfg.actclip_source, "logit_scale": None if scale is None else float(scale.exp()),
                     "step": state.get("step")}


def export_language_head(state: dict[str, Any], prefix: str, out_dir: Path,
                         extra: dict[str, Any] | None = None) -> None:
    """Write the projector of a training checkpoint's state into ``out_dir`` (with ``extra`` in its description);
    nothing when there is none."""
    found = _from_state(state, prefix)
    if found is None:
        return
    weights, meta = found
    save_file(weights, str(Path(out_dir) / PROJECTOR_WEIGHTS), metadata={"format": "pt"})
    (Path(out_dir) / PROJECTOR_META).write_text(json.dumps(meta | (extra or {}), indent=2))


def _build(weights: dict[str, torch.Tensor], meta: dict[str, Any], where: Path) -> LanguageHead:
    projector = LanguageProjector(int(meta["embed_dim"]), int(meta["hidden_dim"]), int(meta["text_dim"]))
    try:
        projector.load_state_dict(weights)
    except RuntimeError as exc:
        raise CheckpointError(f"the language projector of {where} does not match its description ({exc}); "
                              "export the encoder again") from None
    return LanguageHead(projector, meta).eval()


def load_language_head(source: Path) -> LanguageHead | None:
    """The language head of an exported encoder folder (or its weights file) or of a pretrain ``.pt`` checkpoint;
    None when the source has none (a VideoMAE checkpoint from elsewhere, a pixel-only model)."""
    source = Path(source)
    if source.suffix == ".pt" and source.is_file():
        found = _from_state(load_checkpoint(source, mmap=True), "")  # reads the projector's tensors only
        return None if found is None else _build(*found, source)
    folder = source if source.is_dir() else source.parent
    if not (folder / PROJECTOR_WEIGHTS).is_file():
        return None
    meta = json.loads((folder / PROJECTOR_META).read_text())
    return _build(load_file(str(folder / PROJECTOR_WEIGHTS)), meta, folder)


def has_language_head(source: Path) -> bool:
    """Whether :func:`load_language_head` would find one, without loading any weights."""
    source = Path(source)
    if source.suffix == ".pt" and source.is_file():
        return any(k.startswith("projector.") for k in load_checkpoint(source, mmap=True)["model"])
    return ((source if source.is_dir() else source.parent) / PROJECTOR_WEIGHTS).is_file()


def checkpoint_step(source: Path) -> int | None:
    """The training step a checkpoint was saved at, when it says (a pretrain ``.pt``, or an export with a language
    head), without loading its weights."""
    source = Path(source)
    if source.suffix == ".pt" and source.is_file():
        step = load_checkpoint(source, mmap=True).get("step")
    else:
        meta = (source if source.is_dir() else source.parent) / PROJECTOR_META
        step = json.loads(meta.read_text()).get("step") if meta.is_file() else None
    return None if step is None else int(step)
