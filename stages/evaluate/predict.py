"""Multi-view prediction over shard samples: every clip's views go through the classifier, the per-view
softmax (sigmoid for multi-label) is averaged. A clip that cannot be decoded is reported and left out."""
from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fils_model.classifier import VideoClassifier
from fils_model.finetune_loss import target_key
from fils_model.precision import inference_autocast
from pipeline.shards import ShardSample
from pipeline.video.clip_config import SamplingConfig, ViewsConfig
from stages.evaluate.metrics import average_views
from stages.finetune.data import view_batches

log = logging.getLogger("fils.evaluate")


@dataclass
class Predictions:
    keys: list[str] = field(default_factory=list)
    scores: dict[str, list[np.ndarray]] = field(default_factory=dict)  # head -> per clip (K,) probabilities
    targets: dict[str, list[np.ndarray]] = field(default_factory=dict)  # head -> per clip index or multi-hot
    excluded: list[dict[str, str]] = field(default_factory=list)  # {key, reason}

    def save(self, path: Path) -> None:
        arrays = {f"scores/{h}": np.stack(v) for h, v in self.scores.items()}
        arrays |= {f"targets/{h}": np.stack(v) for h, v in self.targets.items()}
        np.savez(path, keys=np.array(self.keys, dtype=str), **arrays)

    @staticmethod
    def load_all(paths: Iterable[Path]) -> "Predictions":
        merged = Predictions()
        for path in paths:
            with np.load(path) as data:
                merged.keys += data["keys"].tolist()
                for name in data.files:
                    if "/" in name:
                        kind, head = name.split("/", 1)
                        getattr(merged, kind).setdefault(head, []).extend(data[name])
        return merged

    def arrays(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        return ({h: np.stack(v) for h, v in self.scores.items()}, {h: np.stack(v) for h, v in self.targets.items()})


@torch.no_grad()
def predict(models: Mapping[str, VideoClassifier], samples: Iterable[ShardSample], views: ViewsConfig,
            sampling: SamplingConfig, batch_size: int, device: torch.device, backend: str = "auto"
            ) -> dict[str, Predictions]:
    """View-averaged probabilities of every labelled, decodable clip in ``samples``, for each named model (the
    views are decoded once for all of them; the models share the encoder config and head)."""
    first = next(iter(models.values()))
    outs = {name: Predictions() for name in models}
    for model in models.values():
        model.eval().to(device)
    multi = first.head_cfg.task == "multi_label"
    excluded: list[dict[str, str]] = []
    for batch in view_batches(samples, first.cfg, first.head_cfg, views, sampling, batch_size, excluded, backend):
        clips = len(batch["keys"])
        video = batch["video"].to(device)
        for name, model in models.items():
            out = outs[name]
            out.keys += batch["keys"]
            with inference_autocast(device):  # the encoder in bf16 on CUDA; the heads in fp32: bf16 logits would
                features = model.features(video)  # round scores 8-16 to steps of 1/16, tying close classes
            for head, values in model.classify(features.float()).items():
                per_clip = values.float().cpu().numpy().reshape(clips, -1, values.shape[-1])
                out.scores.setdefault(head, []).extend(average_views(per_clip, multi))
                out.targets.setdefault(head, []).extend(batch[target_key(head)].numpy())
    for out in outs.values():
        out.excluded = excluded
    return outs
