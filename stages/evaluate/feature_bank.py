"""The frozen-feature bank: a checkpoint's features of every clip of a split, decoded and encoded once, then read by
every frozen-encoder evaluation (linear and attentive probe sweeps, zero-shot classification, retrieval).

Keyed by what decides the features: ``<workdir>/.cache/features/<bank id>/<shard id>/``, where the bank id hashes
the encoder weights, the language projector's weights and description, the model config, the views and frame
sampling, whether tokens are kept and this format's version, and the shard id the shard file (name, size,
modification time). Each entry is sealed by one rename (``pipeline.sealed_cache``), so a killed run leaves no
partial entry and the next run redoes only the shards it had not sealed; runs and sweeps that ask for the same
features share them. A clip that cannot be decoded is excluded and recorded, as in multi-view evaluation; a shard
with an excluded clip is not sealed, so a passing read error is retried by the next run rather than kept.
Features computed on a GPU (bf16 autocast) and on a CPU (fp32) share a bank: they differ by rounding only.

Size: pooled features are 4 x width bytes per view (3 KB for ViT-B), so a ViT-B checkpoint's SSv2 banks (the
training split at one view, validation at 2 x 3) take about 1 GB; delete ``.cache/features`` to reclaim it.

Per clip and view: the mean of the encoder's output tokens (what the linear probe reads, as
:meth:`fils_model.classifier.VideoClassifier.features`), the unit language embedding when the checkpoint has a
language projector (``fils_model.language_head``) and, with ``tokens``, every output token in fp16 (what the
attentive probe reads: 1568 x 768 x 2 bytes per ViT-B view, so off by default).
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from fils_model.encoder import VideoEncoder
from fils_model.encoder_init import load_pretrained_encoder
from fils_model.finetune_config import HeadConfig
from fils_model.language_head import LanguageHead, load_language_head
from fils_model.precision import inference_autocast
from fils_model.weights import weights_fingerprint
from pipeline.fingerprint import file_identity, hash_value, path_identity
from pipeline.sealed_cache import reap_staging, seal_folder
from pipeline.shards import ShardSample, iter_shard
from pipeline.video.clip_config import SamplingConfig, ViewsConfig
from stages.finetune.data import clip_targets, view_batches

BANK_VERSION = "2"  # 2: clips carry key and source path; shards with exclusions are not sealed
CACHE_SUBDIR = Path(".cache") / "features"
# What any task's targets are made from, the clip's name in messages, and its video (held-out parts group by it).
CLIP_FIELDS = ("key", "source_path", "label", "labels", "verb_class", "noun_class")
TENSORS_FILE, CLIPS_FILE = "features.safetensors", "clips.json"


@dataclass(frozen=True)
class BankSettings:
    """How a split is turned into features, besides the checkpoint."""

    views: ViewsConfig
    sampling: SamplingConfig
    tokens: bool = False
    batch_size: int = 4  # runtime only: clips per forward pass
    decode_backend: str = "auto"  # runtime only: the backends decode identical frames

    def identity(self) -> dict[str, Any]:
        return {"views": self.views.model_dump(mode="json"), "sampling": self.sampling.model_dump(mode="json"),
                "tokens": self.tokens}


@dataclass
class Features:
    """Features of clips in shard order: ``pooled`` (clips, views, D) fp32, ``language`` (clips, views, text_dim)
    unit vectors or None, ``tokens`` (clips, views, N, D) fp16 or None; ``clips`` the label fields of each."""

    keys: list[str] = field(default_factory=list)
    clips: list[dict[str, Any]] = field(default_factory=list)
    pooled: torch.Tensor | None = None
    language: torch.Tensor | None = None
    tokens: torch.Tensor | None = None
    excluded: list[dict[str, str]] = field(default_factory=list)
    decoded: int = 0  # clips decoded to make these features (0 when every shard came from the bank)

    @staticmethod
    def concat(parts: list[Features]) -> Features:
        def cat(name: str) -> torch.Tensor | None:
            tensors = [getattr(p, name) for p in parts if getattr(p, name) is not None]
            return torch.cat(tensors) if tensors else None

        return Features([k for p in parts for k in p.keys], [c for p in parts for c in p.clips], cat("pooled"),
                        cat("language"), cat("tokens"), [e for p in parts for e in p.excluded],
                        sum(p.decoded for p in parts))

    def labelled(self, head: HeadConfig) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Indices of the clips labelled for ``head``'s task and their stacked ``target_<head>`` tensors."""
        index, targets = [], []
        for i, clip in enumerate(self.clips):
            found = clip_targets(clip, head)
            if found is not None:
                index.append(i)
                targets.append(found)
        if not targets:
            raise ValueError(f"no clip of the {len(self.keys)} in the feature bank is labelled for a {head.task} "
                             "head; check finetune.head against the split's annotations")
        return torch.tensor(index), {name: torch.stack([t[name] for t in targets]) for name in targets[0]}

    @staticmethod
    def scoring_targets(targets: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        """:meth:`labelled`'s targets as :func:`stages.evaluate.scoring.score` takes them (by head name)."""
        return {name.removeprefix("target_"): value.numpy() for name, value in targets.items()}

    def clip_language(self) -> torch.Tensor:
        """One unit language embedding per clip: the mean over its views, normalised."""
        if self.language is None:
            raise ValueError("these features have no language embeddings: the checkpoint has no language projector")
        return F.normalize(self.language.mean(1), dim=-1)


def language_identity(head: LanguageHead) -> str:
    """Hash of a language head's weights and description (what its embeddings depend on)."""
    state = {name: hashlib.sha256(value.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
             for name, value in head.projector.state_dict().items()}
    return hash_value({"weights": state, "meta": head.meta})


class FrozenEncoder:
    """A checkpoint's frozen encoder and language head (when it has one), loaded once, with the bank id part that
    identifies its weights."""

    def __init__(self, source: Path, device: torch.device) -> None:
        self.source, self.device = Path(source), device
        encoder, self.cfg = load_pretrained_encoder(self.source)
        self.encoder: VideoEncoder = encoder.eval().to(device)
        self.language: LanguageHead | None = load_language_head(self.source)
        if self.language is not None:
            self.language.to(device)
        self.identity = {"weights": weights_fingerprint(self.source), "model": self.cfg.model_dump(mode="json"),
                         "language": None if self.language is None else language_identity(self.language)}

    @torch.no_grad()
    def __call__(self, video: torch.Tensor, keep_tokens: bool) -> dict[str, torch.Tensor]:
        video = video.to(self.device, non_blocking=True)
        with inference_autocast(self.device):
            embedded = self.encoder.embed(video)
            encoded = self.encoder.encode(embedded)
            out = {"pooled": encoded.float().mean(1)}
            if self.language is not None:
                out["language"] = self.language(self.language.tokens_of(embedded, encoded))
        if keep_tokens:
            out["tokens"] = encoded.half()
        return {name: value.cpu() for name, value in out.items()}


@lru_cache(maxsize=1)
def _loaded(source: str, device: str, stamp: str | None) -> FrozenEncoder:
    return FrozenEncoder(Path(source), torch.device(device))


def frozen_encoder(source: Path, device: torch.device) -> FrozenEncoder:
    """:class:`FrozenEncoder` of ``source``, kept loaded for the next call in this process (the evaluate stage's
    units of one worker) until the file changes."""
    return _loaded(str(source), str(device), path_identity(source))


def release_frozen_encoders() -> None:
    """Let go of the encoder :func:`frozen_encoder` keeps (its GPU memory, before other work in this process)."""
    _loaded.cache_clear()


def bank_dir(workdir: Path, encoder: FrozenEncoder, settings: BankSettings) -> Path:
    return workdir / CACHE_SUBDIR / hash_value({"version": BANK_VERSION, "encoder": encoder.identity,
                                                "settings": settings.identity()})[:24]


def _shard_id(shard: Path) -> str:
    return f"{shard.stem}-{hash_value(file_identity(shard, shard.parent))[:16]}"


def _load(entry: Path) -> Features:
    meta = json.loads((entry / CLIPS_FILE).read_text())
    tensors = load_file(str(entry / TENSORS_FILE)) if meta["keys"] else {}
    return Features(meta["keys"], meta["clips"], tensors.get("pooled"), tensors.get("language"),
                    tensors.get("tokens"), meta["excluded"], 0)


def _recording_fields(samples: Iterator[ShardSample], clips: dict[str, dict[str, Any]]) -> Iterator[ShardSample]:
    for sample in samples:
        clips[sample.key] = {name: sample.meta.get(name) for name in CLIP_FIELDS}
        yield sample


def encode_shard(encoder: FrozenEncoder, shard: Path, settings: BankSettings) -> Features:
    """Decode and encode every clip of one shard (``settings.views`` views each)."""
    views = settings.views.temporal * settings.views.spatial
    excluded: list[dict[str, str]] = []
    fields: dict[str, dict[str, Any]] = {}
    out = Features(excluded=excluded)
    parts: dict[str, list[torch.Tensor]] = {}
    for batch in view_batches(_recording_fields(iter_shard(shard), fields), encoder.cfg, None, settings.views,
                              settings.sampling, settings.batch_size, excluded, settings.decode_backend):
        out.keys += batch["keys"]
        for name, value in encoder(batch["video"], settings.tokens).items():
            parts.setdefault(name, []).append(value.reshape(len(batch["keys"]), views, *value.shape[1:]))
    out.clips = [fields[key] for key in out.keys]
    out.decoded = len(fields)
    for name, values in parts.items():
        setattr(out, name, torch.cat(values))
    return out


def _write(features: Features, folder: Path) -> None:
    tensors = {name: getattr(features, name).contiguous() for name in ("pooled", "language", "tokens")
               if getattr(features, name) is not None}
    if tensors:
        save_file(tensors, str(folder / TENSORS_FILE))
    (folder / CLIPS_FILE).write_text(json.dumps({"keys": features.keys, "clips": features.clips,
                                                 "excluded": features.excluded}))


def bank_features(workdir: Path, encoder: FrozenEncoder, shards: list[Path], settings: BankSettings) -> Features:
    """Features of every clip of ``shards`` (in order): read from the bank, or decoded, encoded and sealed into it
    shard by shard. ``decoded`` counts the clips decoded by this call."""
    folder = bank_dir(workdir, encoder, settings)
    reap_staging(folder)
    parts = []
    for shard in shards:
        entry = folder / _shard_id(shard)
        if (entry / CLIPS_FILE).is_file():
            parts.append(_load(entry))
            continue
        features = encode_shard(encoder, shard, settings)
        if not features.excluded:
            seal_folder(entry, lambda staging: _write(features, staging))  # noqa: B023
        parts.append(features)
    return Features.concat(parts)

