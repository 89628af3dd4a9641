"""open_clip text towers, including OpenAI-format CLIP and ViFi-CLIP checkpoints.

Checkpoints from training code wrap the state dict (`{"model": ...}`, `{"state_dict": ...}`), prefix keys
(`module.` from DDP, `model.`) and, for ViFi-CLIP, hold the text tower under `text_encoder.` next to the vision
tower. We unwrap, strip, select the text tower, and insist every text-tower parameter comes from some
checkpoint: open_clip's own tower loading is non-strict and would leave random weights with only a log line.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import open_clip
import torch

from stages.captions.captioner_config import content_hash
from stages.captions.text_encoders import TextEncoder

_CONTAINER_KEYS = ("state_dict", "model", "module")
_WRAPPER_PREFIXES = ("module.", "model.")
_VIFI_TEXT_PREFIX = "text_encoder."
_NON_TEXT_KEYS = ("logit_scale", "logit_bias")
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")


class MissingTextWeightsError(ValueError):
    """Some text-tower parameters were in none of the given checkpoints."""


def read_checkpoint(path: str | os.PathLike, *, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Flat tensor dict from a .safetensors, torch.save or TorchScript (OpenAI CLIP) file, unwrapped and
    with wrapper prefixes removed."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"text encoder checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        obj: Any = load_file(path)
    elif zipfile.is_zipfile(path) and any(n.endswith("constants.pkl") for n in zipfile.ZipFile(path).namelist()):
        obj = torch.jit.load(path, map_location="cpu").state_dict()  # OpenAI's released CLIP files
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=not allow_pickle)
        except Exception as err:  # torch raises UnpicklingError/RuntimeError/... for non-tensor objects
            raise ValueError(
                f"{path} could not be read with weights_only=True ({type(err).__name__}); it pickles non-tensor "
                "objects (e.g. a training config). Pass allow_pickle=True if you trust the file."
            ) from err
    while not all(isinstance(v, torch.Tensor) for v in obj.values()):
        inner = next((obj[k] for k in _CONTAINER_KEYS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            raise ValueError(f"no state dict found in {path}; top-level keys: {sorted(obj)[:20]}")
        obj = inner
    state = dict(obj)
    stripped = True
    while stripped:
        stripped = False
        for prefix in _WRAPPER_PREFIXES:
            if state and all(k.startswith(prefix) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items()}
                stripped = True
    return state


def select_text_tower(state: dict[str, torch.Tensor], text_keys: set[str]) -> dict[str, torch.Tensor]:
    """The text-tower entries of a stripped checkpoint, in open_clip CLIP naming.

    Raises if the checkpoint has text-tower keys the model lacks (wrong architecture, e.g. depth/width).
    """
    if any(k.startswith(_VIFI_TEXT_PREFIX) for k in state):
        state = {k[len(_VIFI_TEXT_PREFIX):]: v for k, v in state.items() if k.startswith(_VIFI_TEXT_PREFIX)}
    roots = {k.split(".")[0] for k in text_keys}
    unexpected = sorted(k for k in state if k.split(".")[0] in roots and k not in text_keys)
    if unexpected:
        raise ValueError(f"checkpoint has text-tower keys the model does not: {unexpected[:20]}; wrong model name?")
    return {k: v for k, v in state.items() if k in text_keys}


class OpenClipTextEncoder(TextEncoder):
    """Text tower of an open_clip CLIP model (the vision tower is dropped after loading)."""

    def __init__(
        self,
        model_name: str,
        pretrained: str | os.PathLike | None,
        text_checkpoint: str | os.PathLike | None,
        *,
        allow_pickle: bool,
        device: torch.device,
        normalize: bool,
    ) -> None:
        local_files = [Path(p).expanduser() for p in (pretrained, text_checkpoint) if p is not None and _is_path(p)]
        tag = None if pretrained is None or _is_path(pretrained) else str(pretrained)
        if text_checkpoint is not None and not _is_path(text_checkpoint):
            raise FileNotFoundError(f"text_checkpoint {text_checkpoint} does not exist; pass a local checkpoint file")
        model = open_clip.create_model(model_name, pretrained=tag)
        if hasattr(model, "text"):
            raise ValueError(f"{model_name} has a custom (e.g. HF) text tower; use a CLIP-style open_clip model")
        text_keys = {k for k in model.state_dict() if not k.startswith("visual.") and k not in _NON_TEXT_KEYS}
        found: set[str] = set(text_keys) if tag is not None else set()
        for path in local_files:
            tower = select_text_tower(read_checkpoint(path, allow_pickle=allow_pickle), text_keys)
            model.load_state_dict(tower, strict=False)
            found |= tower.keys()
        missing = sorted(text_keys - found)
        if missing:
            raise MissingTextWeightsError(
                f"text-tower weights missing for {model_name} (pretrained={pretrained}, text_checkpoint="
                f"{text_checkpoint}): {missing}. ViFi-CLIP checkpoints do not store token_embedding: pass the "
                "OpenAI CLIP weights as `pretrained` ('openai' or the local ViT-B-16.pt)."
            )
        model.visual = None
        self.model = model.to(device).eval().requires_grad_(False)
        self.tokenizer = open_clip.get_tokenizer(model_name)
        self.device = device
        self.normalize = normalize
        self.dim = int(open_clip.get_model_config(model_name)["embed_dim"])
        sources = [tag] if tag else []
        sources += [f"{p.name}@{content_hash([p])[:16]}" for p in local_files]
        self.encoder_id = f"open_clip:{model_name}:{'+'.join(sources) or 'random'}"

    def _embed(self, texts: list[str]) -> torch.Tensor:
        return self.model.encode_text(self.tokenizer(texts).to(self.device))


def _is_path(value: str | os.PathLike) -> bool:
    """A local file (as opposed to an open_clip pretrained tag such as 'openai')."""
    text = os.fspath(value)
    if isinstance(value, os.PathLike) or "/" in text or text.endswith(_CHECKPOINT_SUFFIXES):
        return True
    return Path(text).expanduser().exists()


def load(model: str, *, pretrained: str | os.PathLike | None, text_checkpoint: str | os.PathLike | None,
         allow_pickle: bool, device: torch.device, normalize: bool) -> OpenClipTextEncoder:
    """The `open_clip` backend (see ``OpenClipTextEncoder``)."""
    return OpenClipTextEncoder(model, pretrained, text_checkpoint, allow_pickle=allow_pickle, device=device,
                               normalize=normalize)
