"""The worker side of the pre-training loader: shards -> samples -> decoded, augmented clips -> batches.

Determinism, so that a resumed run sees exactly the batches of an uninterrupted one:

* Steps are dealt round-robin to ``W`` *logical* loader workers (step ``s`` -> worker ``s % W``); an attempt that
  starts at step ``s0`` gives physical worker ``p`` the steps ``s0 + p, s0 + p + W, ...``, which keeps the
  DataLoader's round-robin order equal to the step order.
* Each (rank, logical worker) reads its own subset of shards (``shards[rank::ranks][worker::W]``, as
  ``wds.split_by_node`` then ``wds.split_by_worker``), resampled forever in a seeded order, several shards at
  once (``interleave_shards``) and through a seeded shuffle buffer.
* The stream restarts, freshly seeded, every ``segment_steps`` steps (the checkpoint interval), so a run resumed
  from a regular checkpoint needs no fast-forwarding; inside a segment it skips the raw samples already used.
* Every random draw comes from a generator seeded by (seed, stream, segment, raw sample index), masks by
  (seed, step, rank).
"""
from __future__ import annotations

import contextlib
import itertools
import json
import logging
import random
import signal
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import IterableDataset, get_worker_info

from fils_model.config import ModelConfig
from fils_model.masking import tube_mask
from pipeline.action_area.token_mask import token_mask
from pipeline.config.pretrain import PretrainDataConfig
from pipeline.pretrain_data.tables import ClipTables
from pipeline.pretrain_data.transforms import (
    CENTRE_BOX, apply_crop_flip, crop_box, frame_indices, normalise, random_crop_flip,
)
from pipeline.video.decode import decode_frames

log = logging.getLogger("fils.pretrain.data")


class StreamError(RuntimeError):
    """A loader stream cannot produce samples."""


class DecodeTimeout(RuntimeError):
    pass


def seed_of(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`DecodeTimeout` in the block after ``seconds`` (main thread only: SIGALRM)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _expired(signum: int, frame: Any) -> None:
        raise DecodeTimeout(f"decoding took longer than {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, _expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass(frozen=True)
class Layout:
    """Ranks x logical loader workers; every (rank, worker) pair is one stream with its own shards."""

    rank: int
    world_size: int
    workers: int  # logical workers per rank, >= 1

    def stream_shards(self, shards: tuple[str, ...], worker: int) -> tuple[str, ...]:
        return shards[self.rank :: self.world_size][worker :: self.workers]


@dataclass(frozen=True)
class StreamSettings:
    """What every loader worker needs (pickled into the workers once)."""

    shards: tuple[str, ...]
    data: PretrainDataConfig
    model: ModelConfig
    local_batch: int
    segment_steps: int
    decode_timeout_s: float
    tables: ClipTables


class SampleCounter(Counter):
    """What one worker did with its raw samples: ``good``, ``raw``, dropped (``corrupt``, ``unreadable``,
    ``no_caption``, ``no_action_area``) or patched (``centre_box``); sent with every batch to the main process."""

    def skip(self, reason: str, key: str, detail: object = "") -> None:
        self[reason] += 1
        level = logging.DEBUG if reason == "no_caption" else logging.WARNING
        log.log(level, "skipped clip %s (%s) %s", key, reason, detail)

    def tar_error(self, exc: Exception) -> bool:
        """``handler`` of ``wds.tarfile_to_samples``: count, log, continue."""
        self["unreadable"] += 1
        log.warning("unreadable shard data skipped: %s", exc)
        return True

    def count_raw(self, samples: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for sample in samples:
            self["raw"] += 1
            yield sample


class ShardCycle(IterableDataset):
    """Endless seeded resampling of a stream's shards, each pass a fresh permutation (wds' ``resampled``
    mode, but reproducible); a pass that yields no sample at all is an error instead of an endless loop."""

    def __init__(self, shards: tuple[str, ...], seed: int, counter: SampleCounter) -> None:
        self.shards, self.seed, self.counter = shards, seed, counter

    def __iter__(self) -> Iterator[dict[str, str]]:
        rng = random.Random(self.seed)
        marks = [-1, -1]  # raw count at the start of the last two passes (the tar reader holds one sample back)
        while self.counter["raw"] > marks[0]:
            marks = [marks[1], self.counter["raw"]]
            for url in rng.sample(self.shards, len(self.shards)):
                yield {"url": url}
        raise StreamError(f"shards {list(self.shards)} hold no readable sample ({self.counter['unreadable']} errors)")


def interleave(readers: list[Iterable[dict[str, Any]]], rng: random.Random) -> Iterator[dict[str, Any]]:
    """Samples drawn at random from several endless shard readers."""
    iterators = [iter(r) for r in readers]
    while True:
        yield next(iterators[rng.randrange(len(iterators))])


class ClipBatchStream(IterableDataset):
    """Batches for steps ``[start, end)`` of one rank; iterate it through a DataLoader with ``batch_size=None``.

    Each batch holds the trainer's keys plus ``step``, ``worker``, ``segment``, ``cursor`` (raw samples this
    logical worker has consumed in the segment) and ``counts`` (its :class:`SampleCounter`).
    """

    def __init__(self, settings: StreamSettings, layout: Layout, start: int, end: int,
                 cursors: dict[int, int] | None = None) -> None:
        self.settings, self.layout, self.start, self.end = settings, layout, start, end
        self.cursors = cursors or {}  # logical worker -> raw samples used in the segment of `start`

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        physical = info.id if info is not None else 0
        steps = range(self.start + physical, self.end, self.layout.workers)
        if not steps:
            return
        worker = steps[0] % self.layout.workers
        counter = SampleCounter()
        length = self.settings.segment_steps
        for segment, in_segment in itertools.groupby(steps, key=lambda s: s // length):
            skip = self.cursors.get(worker, 0) if segment == self.start // length else 0
            yield from self._segment(worker, segment, list(in_segment), skip, counter)

    def _segment(self, worker: int, segment: int, steps: list[int], skip: int,
                 counter: SampleCounter) -> Iterator[dict[str, Any]]:
        cfg, layout = self.settings.data, self.layout
        stream = worker * layout.world_size + layout.rank
        shards = layout.stream_shards(self.settings.shards, worker)
        ways = max(1, min(cfg.interleave_shards, len(shards)))
        readers = [wds.DataPipeline(ShardCycle(shards[i::ways], seed_of(cfg.seed, stream, segment, 10 + i), counter),
                                    wds.tarfile_to_samples(handler=counter.tar_error)) for i in range(ways)]
        raw = wds.DataPipeline(
            partial(interleave, readers, random.Random(seed_of(cfg.seed, stream, segment, 0))),
            counter.count_raw,
            wds.shuffle(cfg.shuffle_buffer, initial=cfg.shuffle_buffer,
                        rng=random.Random(seed_of(cfg.seed, stream, segment, 1))),
        )
        indexed = enumerate(itertools.islice(raw, skip, None), start=skip)
        prepared = ((i, self._prepare(sample, (cfg.seed, stream, segment, i), counter)) for i, sample in indexed)
        good = ((i, s) for i, s in prepared if s is not None)
        for step in steps:
            items = list(itertools.islice(good, self.settings.local_batch))
            yield self._collate([s for _, s in items], step) | {
                "worker": worker, "segment": segment, "cursor": items[-1][0] + 1, "counts": dict(counter)}

    def _prepare(self, raw: dict[str, Any], seed: tuple[int, ...], counter: SampleCounter) -> dict[str, Any] | None:
        """Decode, sample, crop/flip and mask one clip; None (counted) when it cannot be used."""
        cfg, model, tables = self.settings.data, self.settings.model, self.settings.tables
        key = str(raw.get("__key__"))
        embedding = tables.embedding(key)
        if embedding is None:
            return counter.skip("no_caption", key)
        box = tables.box(key)
        if box is None:
            if cfg.missing_action_area == "skip":
                return counter.skip("no_action_area", key)
            counter["centre_box"] += 1
            box = CENTRE_BOX
        rng = np.random.default_rng(seed)
        try:
            with time_limit(self.settings.decode_timeout_s):
                meta = json.loads(raw["json"])
                indices = frame_indices(int(meta["num_frames"]), model.num_frames, cfg.sampling, rng)
                offset = int(meta.get("frame_offset") or 0)
                frames = decode_frames(raw["mp4"], [i + offset for i in indices], cfg.decode_backend)
        except Exception as exc:  # noqa: BLE001 - a bad clip never stops training
            return counter.skip("corrupt", key, f"{type(exc).__name__}: {exc}")
        height, width = frames.shape[1:3]
        crop = random_crop_flip(width, height, cfg.augment, rng)
        action = token_mask(crop_box(box, crop, width, height), model.img_size, model.patch_size,
                            model.num_frames, model.tubelet_size)
        counter["good"] += 1
        return {"video": normalise(apply_crop_flip(frames, crop, model.img_size)),
                "action_tokens": torch.from_numpy(action),
                "text_embedding": torch.from_numpy(embedding.copy())}

    def _collate(self, samples: list[dict[str, torch.Tensor]], step: int) -> dict[str, Any]:
        model = self.settings.model
        batch: dict[str, Any] = {k: torch.stack([s[k] for s in samples]) for k in samples[0]}
        rng = np.random.default_rng([self.settings.data.seed, step, self.layout.rank])
        batch["mask"] = tube_mask(len(samples), model.grid, model.mask_ratio, rng)
        batch["step"] = step
        return batch
