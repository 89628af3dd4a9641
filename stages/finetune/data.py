"""Labelled clips for fine-tuning: shard samples -> targets of the configured heads + decoded, sampled,
cropped/flipped, normalised frames (the pre-training loader's transforms), batched per rank.

Streams: every (rank, loader worker) reads its own shards when there are enough, otherwise all shards with a
sample stride. Each pass over the data is shuffled with a seed derived from (seed, start step, pass, stream),
so runs are reproducible; a resumed run continues with fresh shuffles rather than the interrupted order.
Clips that cannot be decoded or carry no usable label are skipped and logged, never fatal.
"""
from __future__ import annotations

import itertools
import json
import logging
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from fils_model.config import ModelConfig
from fils_model.finetune_config import HeadConfig
from fils_model.finetune_loss import target_key
from pipeline.parallel import loader_context
from pipeline.shards import ShardSample
from pipeline.video.clip_config import SamplingConfig, ViewsConfig
from pipeline.video.decode import decode_frames
from pipeline.video.transforms import apply_crop_flip, frame_indices, normalise, random_crop_flip
from pipeline.video.views import clip_views
from stages.finetune.config import FinetuneDataConfig
from stages.pretrain.stream import seed_of
from stages.shard.tables import read_clips

log = logging.getLogger("fils.finetune.data")


class LabelError(ValueError):
    """A clip's label does not fit the configured head."""


def clip_targets(meta: dict[str, Any], head: HeadConfig) -> dict[str, Any] | None:
    """Targets of every head for one clip's metadata; None when the clip is unlabelled for this task."""
    if head.task == "multi_label":
        classes = [int(c) for c in meta.get("labels") or []]
        if not classes:
            return None
        _check_range(meta, "labels", max(classes), head.num_classes)
        hot = torch.zeros(head.num_classes)
        hot[classes] = 1.0
        return {target_key("label"): hot}
    fields = {"verb": "verb_class", "noun": "noun_class"} if head.task == "epic_verb_noun" else \
        {name: "label" for name in head.outputs()}
    values = {name: int(meta.get(field) if meta.get(field) is not None else -1) for name, field in fields.items()}
    if min(values.values()) < 0:
        return None
    for name, value in values.items():
        _check_range(meta, fields[name], value, head.outputs()[name])
    return {target_key(name): torch.tensor(value) for name, value in values.items()}


def _check_range(meta: dict[str, Any], field: str, value: int, width: int) -> None:
    if value >= width:
        raise LabelError(f"clip {meta.get('key')!r}: {field} {value} does not fit a head of {width} classes; "
                         "set finetune.head to the benchmark's class count")


def action_map(shard_dir: Path, num_actions: int) -> tuple[np.ndarray, np.ndarray]:
    """EK-100: verb and noun of every action index (-1 where no clip shows the action), from clips.parquet."""
    table = read_clips(shard_dir, ["label", "verb_class", "noun_class"]).to_pydict()
    verbs, nouns = np.full(num_actions, -1), np.full(num_actions, -1)
    for action, verb, noun in zip(table["label"], table["verb_class"], table["noun_class"]):
        if action is not None and 0 <= action < num_actions and verb is not None and verb >= 0:
            if verbs[action] >= 0 and (verbs[action], nouns[action]) != (verb, noun):
                raise LabelError(f"action {action} maps to verb/noun {(verbs[action], nouns[action])} and "
                                 f"{(verb, noun)} in {shard_dir}; the shard stage's action index is inconsistent")
            verbs[action], nouns[action] = verb, noun
    return verbs, nouns


@dataclass(frozen=True)
class TrainStreamSettings:
    shards: tuple[str, ...]
    data: FinetuneDataConfig
    model: ModelConfig
    head: HeadConfig
    seed: int
    start_step: int
    rank: int
    world_size: int


class LabelledClipStream(IterableDataset):
    """Endless shuffled training samples of this rank: ``video`` plus ``target_<head>`` tensors."""

    def __init__(self, settings: TrainStreamSettings) -> None:
        self.settings = settings

    def _selection(self, workers: int, worker: int) -> tuple[list[str], int, int]:
        """(shards, sample stride, sample offset) of this stream."""
        s = self.settings
        streams, stream = s.world_size * workers, worker * s.world_size + s.rank
        if len(s.shards) >= streams:
            return list(s.shards[stream::streams]), 1, 0
        return list(s.shards), streams, stream

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        s = self.settings
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        shards, stride, offset = self._selection(workers, worker)
        stream = worker * s.world_size + s.rank
        produced = 0
        for epoch in itertools.count():
            rng = random.Random(seed_of(s.seed, s.start_step, epoch, stream))
            raw = wds.DataPipeline(wds.SimpleShardList(rng.sample(shards, len(shards))),
                                   wds.tarfile_to_samples(handler=wds.warn_and_continue),
                                   wds.shuffle(s.data.shuffle_buffer, initial=s.data.shuffle_buffer, rng=rng))
            for index, sample in enumerate(itertools.islice(raw, offset, None, stride)):
                item = self._prepare(sample, np.random.default_rng(seed_of(s.seed, s.start_step, epoch, stream, index)))
                if item is not None:
                    produced += 1
                    yield item
            if epoch > 0 and produced == 0:
                raise RuntimeError(f"no usable labelled clip in shards {shards[:3]}...: every clip was unlabelled "
                                   "or undecodable (see the warnings)")

    def _prepare(self, sample: dict[str, Any], rng: np.random.Generator) -> dict[str, torch.Tensor] | None:
        s = self.settings
        meta = json.loads(sample["json"])
        targets = clip_targets(meta, s.head)
        if targets is None:
            return None
        try:
            indices = frame_indices(int(meta["num_frames"]), s.model.num_frames, s.data.sampling, rng)
            offset = int(meta.get("frame_offset") or 0)
            frames = decode_frames(sample["mp4"], [i + offset for i in indices], s.data.decode_backend)
        except Exception as exc:  # noqa: BLE001 - a bad clip never stops training
            log.warning("skipped clip %s (corrupt): %s: %s", sample.get("__key__"), type(exc).__name__, exc)
            return None
        crop = random_crop_flip(frames.shape[2], frames.shape[1], s.data.augment, rng)
        return {"video": normalise(apply_crop_flip(frames, crop, s.model.img_size)), **targets}


def train_batches(settings: TrainStreamSettings, local_batch: int, workers: int) -> DataLoader:
    """Endless batches of ``local_batch`` clips for one rank."""
    return DataLoader(LabelledClipStream(settings), batch_size=local_batch, num_workers=workers, drop_last=True,
                      multiprocessing_context=loader_context(workers))


def labelled_count(shard_dir: Path, split: str, head: HeadConfig) -> int:
    """Clips of ``split`` with a usable label, from clips.parquet (for epochs -> steps)."""
    rows = read_clips(shard_dir, ["key", "split", "label", "labels", "verb_class", "noun_class"]).to_pylist()
    return sum(1 for row in rows if row["split"] == split and clip_targets(row, head) is not None)


def view_batches(samples: Iterable[ShardSample], model_cfg: ModelConfig, head: HeadConfig, views: ViewsConfig,
                 sampling: SamplingConfig, batch_size: int, excluded: list[dict[str, str]],
                 backend: str = "auto") -> Iterator[dict[str, Any]]:
    """Batches of ``batch_size`` labelled clips: ``video`` ``(clips x views, 3, T, H, W)``, stacked
    ``target_<head>`` and ``keys``. Undecodable clips are appended to ``excluded`` and skipped."""
    pending: list[tuple[str, dict[str, torch.Tensor], torch.Tensor]] = []

    def collate() -> dict[str, Any]:
        batch = {"keys": [k for k, _, _ in pending], "video": torch.cat([v for _, _, v in pending])}
        batch |= {name: torch.stack([t[name] for _, t, _ in pending]) for name in pending[0][1]}
        pending.clear()
        return batch

    for sample in samples:
        targets = clip_targets(sample.meta, head)
        if targets is None:
            continue  # unlabelled in this task (e.g. EK-100 test clips): not part of the evaluation
        offset = int(sample.meta.get("frame_offset") or 0)
        try:
            video = clip_views(lambda idx: decode_frames(sample.mp4, [i + offset for i in idx], backend),  # noqa: B023
                               int(sample.meta["num_frames"]), model_cfg.num_frames, model_cfg.img_size, sampling,
                               views.temporal, views.spatial)
        except Exception as exc:  # noqa: BLE001 - one bad clip is reported, not fatal
            reason = f"{type(exc).__name__}: {exc}"
            log.warning("clip %s excluded: %s", sample.key, reason)
            excluded.append({"key": sample.key, "reason": reason})
            continue
        pending.append((sample.key, targets, video))
        if len(pending) == batch_size:
            yield collate()
    if pending:
        yield collate()
