"""Labelled clips for fine-tuning and evaluation: the targets of the configured heads for a clip, the training
batches (the shared training loader, ``pipeline.clips``, with :class:`LabelRecipe`: deterministic, exactly
resumable, time-limited decoding, a bad clip skipped and counted, never fatal) and the test views."""
from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fils_model.config import ModelConfig
from fils_model.finetune_config import HeadConfig
from fils_model.finetune_loss import target_key
from pipeline.clips.stream import SampleCounter
from pipeline.shards import ShardSample
from pipeline.video.clip_config import SamplingConfig, ViewsConfig
from pipeline.video.decode import decode_frames
from pipeline.video.transforms import CropFlip
from pipeline.video.views import clip_views
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
class LabelRecipe:
    """What fine-tuning makes of a clip besides its frames: one ``target_<head>`` per head."""

    head: HeadConfig
    skip_reasons: tuple[str, ...] = ("unlabelled",)

    def before_decode(self, key: str, meta: dict[str, Any], counter: SampleCounter) -> dict[str, Any] | None:
        targets = clip_targets(meta, self.head)
        return counter.skip("unlabelled", key, expected=True) if targets is None else targets

    def after_crop(self, fields: dict[str, Any], crop: CropFlip, width: int, height: int) -> dict[str, torch.Tensor]:
        return fields

    def finish_batch(self, batch: dict[str, Any], step: int, rank: int) -> dict[str, Any]:
        return batch


def labelled_count(shard_dir: Path, split: str, head: HeadConfig) -> int:
    """Clips of ``split`` with a usable label, from clips.parquet (for epochs -> steps)."""
    rows = read_clips(shard_dir, ["key", "split", "label", "labels", "verb_class", "noun_class"]).to_pylist()
    return sum(1 for row in rows if row["split"] == split and clip_targets(row, head) is not None)


def view_batches(samples: Iterable[ShardSample], model_cfg: ModelConfig, head: HeadConfig | None, views: ViewsConfig,
                 sampling: SamplingConfig, batch_size: int, excluded: list[dict[str, str]],
                 backend: str = "auto") -> Iterator[dict[str, Any]]:
    """Batches of ``batch_size`` labelled clips: ``video`` ``(clips x views, 3, T, H, W)``, stacked
    ``target_<head>`` and ``keys``; with ``head`` None, every clip and no targets. Undecodable clips are appended
    to ``excluded`` and skipped."""
    pending: list[tuple[str, dict[str, torch.Tensor], torch.Tensor]] = []

    def collate() -> dict[str, Any]:
        batch = {"keys": [k for k, _, _ in pending], "video": torch.cat([v for _, _, v in pending])}
        batch |= {name: torch.stack([t[name] for _, t, _ in pending]) for name in pending[0][1]}
        pending.clear()
        return batch

    for sample in samples:
        targets = {} if head is None else clip_targets(sample.meta, head)
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
