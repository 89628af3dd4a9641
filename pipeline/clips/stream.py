"""The worker side of the training loader: shards -> samples -> decoded, augmented clips -> batches. What a stage
makes of a clip beyond frames (captions, action tokens, labels, masks) is its :class:`SampleRecipe`.

Determinism, so that a resumed run sees exactly the batches of an uninterrupted one:

* Steps are dealt round-robin to ``W`` *logical* loader workers (step ``s`` -> worker ``s % W``); an attempt that
  starts at step ``s0`` gives physical worker ``p`` the steps ``s0 + p, s0 + p + W, ...``, which keeps the
  DataLoader's round-robin order equal to the step order.
* Every (rank, logical worker) stream draws from all shards: each pass over the data deals a fresh seeded
  permutation of all shards round-robin to the ``S = ranks x W`` streams (the same permutation on every stream, so
  a pass still reads each shard once), and a stream reads its shards several at once (``interleave_shards``)
  through a seeded shuffle buffer. With the shard stage's seeded global shuffle of the training split, a batch is
  then a random sample of the dataset, not neighbouring clips of a few videos (false ActCLIP negatives).
* The stream restarts, freshly seeded, every ``segment_steps`` steps (the checkpoint interval), so a run resumed
  from a regular checkpoint needs no fast-forwarding; inside a segment it skips the raw samples already used.
* Every random draw of a clip comes from a generator seeded by (seed, stream, segment, raw sample index); a
  recipe's batch-level draws (pre-training's masks) from (seed, step, rank).
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
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import IterableDataset, get_worker_info

from pipeline.clips.config import ClipStreamConfig
from pipeline.video.decode import decode_frames
from pipeline.video.transforms import CropFlip, apply_crop_flip, frame_indices, random_crop_flip

log = logging.getLogger("fils.data")


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
    """Ranks x logical loader workers; every (rank, worker) pair is one stream."""

    rank: int
    world_size: int
    workers: int  # logical workers per rank, >= 1

    @property
    def streams(self) -> int:
        return self.world_size * self.workers

    def stream_index(self, worker: int) -> int:
        return worker * self.world_size + self.rank


PROGRESS_COUNTS = ("raw", "prepared", "good")  # how far a worker got, not what happened to its clips
NOT_DROPPED = (*PROGRESS_COUNTS, "centre_box")  # counts that are not a clip dropped


class SampleCounter(Counter):
    """What one worker did with its raw samples: ``good``, ``raw``, dropped (``corrupt``, ``unreadable``, or a
    recipe's reasons) or patched (a recipe's, e.g. ``centre_box``); sent with every batch to the main process."""

    def skip(self, reason: str, key: str, detail: object = "", expected: bool = False) -> None:
        """Count a dropped clip; ``expected`` drops (a clip the recipe has no use for) are logged at debug level."""
        self[reason] += 1
        log.log(logging.DEBUG if expected else logging.WARNING, "skipped clip %s (%s) %s", key, reason, detail)

    def tar_error(self, exc: Exception) -> bool:
        """``handler`` of ``wds.tarfile_to_samples``: count, log, continue."""
        self["unreadable"] += 1
        log.warning("unreadable shard data skipped: %s", exc)
        return True

    def count_raw(self, samples: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for sample in samples:
            self["raw"] += 1
            yield sample


class SampleRecipe(Protocol):
    """What a stage makes of one clip beyond its frames; pickled into every loader worker."""

    skip_reasons: tuple[str, ...]  # the reasons it drops clips for, besides corrupt and unreadable

    def before_decode(self, key: str, meta: dict[str, Any], counter: SampleCounter) -> dict[str, Any] | None:
        """The clip's own fields (looked up before paying for decoding), or None, counted, to drop it."""

    def after_crop(self, fields: dict[str, Any], crop: CropFlip, width: int, height: int) -> dict[str, torch.Tensor]:
        """The clip's tensors besides ``video``, once its crop (of a ``width`` x ``height`` clip) is drawn."""

    def finish_batch(self, batch: dict[str, Any], step: int, rank: int) -> dict[str, Any]:
        """Batch-level fields (masks), drawn from (step, rank) alone."""


@dataclass(frozen=True)
class StreamSettings:
    """What every loader worker needs (pickled into the workers once)."""

    shards: tuple[str, ...]
    data: ClipStreamConfig
    seed: int
    num_frames: int
    img_size: int
    local_batch: int
    segment_steps: int
    decode_timeout_s: float
    recipe: SampleRecipe

    @property
    def clips_per_batch(self) -> int:
        """Decoded clips per batch: each gives ``repeated_views`` of the batch's ``local_batch`` samples."""
        return self.local_batch // self.data.repeated_views

    def __post_init__(self) -> None:
        check_repeated_views(self.local_batch, self.data.repeated_views)


def check_repeated_views(local_batch: int, views: int, setting: str = "repeated_views") -> None:
    """Every decoded clip gives all its ``views`` to one batch, so they must divide a rank's batch."""
    if local_batch % views:
        raise ValueError(f"a rank's batch of {local_batch} samples is not a multiple of {setting} {views}: every "
                         f"decoded clip gives all its views to one batch; change the global batch size or {setting}")


class ShardCycle:
    """Endless shard URLs of one stream: pass ``p`` permutes all shards with a seed shared by every stream and
    takes every ``streams``-th from ``stream`` on, so the streams split each pass and each stream sees every shard
    over the passes. A pass that adds no raw sample at all is an error instead of an endless loop."""

    def __init__(self, shards: tuple[str, ...], stream: int, streams: int, seed: tuple[int, ...],
                 counter: SampleCounter) -> None:
        self.shards, self.stream, self.streams, self.seed, self.counter = shards, stream, streams, seed, counter

    def __iter__(self) -> Iterator[str]:
        counter = self.counter
        marks = [-1, -1]  # raw count at the start of the last two passes (readers hold samples back)
        tried: list[tuple[int, int]] = []  # (prepared, good) at the start of the last three passes
        for pass_index in itertools.count():
            if counter["raw"] <= marks[0]:
                raise StreamError(f"shards {list(self.shards)} hold no readable sample ({counter['unreadable']} errors)")
            if len(tried) == 3 and counter["prepared"] > tried[0][0] and counter["good"] == tried[0][1]:
                dropped = {k: v for k, v in counter.items() if k not in NOT_DROPPED}
                raise StreamError(f"shards {list(self.shards)}: {counter['prepared'] - tried[0][0]} clips tried over "
                                  f"three passes and none usable (so far: {dropped}); check the clips' labels, "
                                  "captions and decodability")
            marks = [marks[1], counter["raw"]]
            tried = [*tried[-2:], (counter["prepared"], counter["good"])]
            order = random.Random(seed_of(*self.seed, pass_index)).sample(self.shards, len(self.shards))
            yield from order[self.stream :: self.streams]


def interleave_shards(urls: Iterator[str], ways: int, rng: random.Random,
                      counter: SampleCounter) -> Iterator[dict[str, Any]]:
    """Samples drawn at random from ``ways`` shards open at once; an exhausted shard is replaced by the next URL."""
    read = wds.tarfile_to_samples(handler=counter.tar_error)
    open_shards: list[Iterator[dict[str, Any]]] = []
    while True:
        while len(open_shards) < ways:
            open_shards.append(iter(read(iter([{"url": next(urls)}]))))
        index = rng.randrange(len(open_shards))
        try:
            yield next(open_shards[index])
        except StopIteration:
            open_shards.pop(index)


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
        seed = self.settings.seed
        indexed = enumerate(itertools.islice(self.raw_samples(worker, segment, counter), skip, None), start=skip)
        stream = self.layout.stream_index(worker)
        prepared = ((i, self._prepare(sample, (seed, stream, segment, i), counter)) for i, sample in indexed)
        good = ((i, s) for i, s in prepared if s is not None)
        for step in steps:
            items = list(itertools.islice(good, self.settings.clips_per_batch))
            yield self._collate([view for _, views in items for view in views], step) | {
                "worker": worker, "segment": segment, "cursor": items[-1][0] + 1, "counts": dict(counter)}

    def raw_samples(self, worker: int, segment: int, counter: SampleCounter) -> Iterator[dict[str, Any]]:
        """The encoded samples (``__key__``, ``mp4``, ``json``) of one logical worker's stream in one segment."""
        cfg, seed, layout, shards = self.settings.data, self.settings.seed, self.layout, self.settings.shards
        stream = layout.stream_index(worker)
        urls = iter(ShardCycle(shards, stream, layout.streams, (seed, segment, 2), counter))
        ways = max(1, min(cfg.interleave_shards, len(shards) // layout.streams))
        return iter(wds.DataPipeline(
            partial(interleave_shards, urls, ways, random.Random(seed_of(seed, stream, segment, 0)), counter),
            counter.count_raw,
            wds.shuffle(cfg.shuffle_buffer, initial=cfg.shuffle_buffer,
                        rng=random.Random(seed_of(seed, stream, segment, 1))),
        ))

    def _prepare(self, raw: dict[str, Any], seed: tuple[int, ...],
                 counter: SampleCounter) -> list[dict[str, Any]] | None:
        """Decode and sample one clip, then ``repeated_views`` views of it, each its own crop/flip with the recipe's
        fields (uint8 ``(T, H, W, 3)`` video; the trainer normalises on its device); None (counted) when it cannot
        be used."""
        s = self.settings
        key = str(raw.get("__key__"))
        counter["prepared"] += 1
        try:
            meta = json.loads(raw["json"])
        except (KeyError, ValueError) as exc:
            return counter.skip("corrupt", key, f"metadata: {type(exc).__name__}: {exc}")
        fields = s.recipe.before_decode(key, meta, counter)
        if fields is None:
            return None
        rng = np.random.default_rng(seed)
        try:
            with time_limit(s.decode_timeout_s):
                indices = frame_indices(int(meta["num_frames"]), s.num_frames, s.data.sampling, rng)
                offset = int(meta.get("frame_offset") or 0)
                frames = decode_frames(raw["mp4"], [i + offset for i in indices], s.data.decode_backend)
        except Exception as exc:  # noqa: BLE001 - a bad clip never stops training
            return counter.skip("corrupt", key, f"{type(exc).__name__}: {exc}")
        height, width = frames.shape[1:3]
        views = []
        for _ in range(s.data.repeated_views):
            crop = random_crop_flip(width, height, s.data.augment, rng)
            views.append({"video": torch.from_numpy(apply_crop_flip(frames, crop, s.img_size)),
                          **s.recipe.after_crop(fields, crop, width, height)})
        counter["good"] += 1
        return views

    def _collate(self, samples: list[dict[str, torch.Tensor]], step: int) -> dict[str, Any]:
        batch: dict[str, Any] = {k: torch.stack([s[k] for s in samples]) for k in samples[0]}
        # (B, T, H, W, 3) as decoded -> a (B, 3, T, H, W) view, channels last in memory: no transposing copy here;
        # the copy to the device keeps the layout and the trainer normalises from it.
        batch["video"] = batch["video"].permute(0, 4, 1, 2, 3)
        batch = self.settings.recipe.finish_batch(batch, step, self.layout.rank)
        batch["step"] = step
        return batch
