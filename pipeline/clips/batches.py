"""The main-process side of the training loader: one DataLoader per attempt over
:class:`~pipeline.clips.stream.ClipBatchStream`, plus the small state that makes resuming exact.

Per rank it keeps, in ``state_dir``: ``cursor.step<N>.rank<R>.json`` (how many raw samples each logical worker
had used in the current segment when an attempt stopped between checkpoints-interval boundaries) and
``counts.rank<R>.json`` (samples skipped over all completed attempts).
"""
from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import cv2
import torch
from torch.utils.data import DataLoader

from pipeline.artifacts import atomic_write_json
from pipeline.clips.config import LoaderConfig
from pipeline.clips.stream import PROGRESS_COUNTS, ClipBatchStream, Layout, StreamSettings
from pipeline.errors import StageError
from pipeline.parallel import loader_context

log = logging.getLogger("fils.data")

STREAM_SKIP_REASONS = ("corrupt", "unreadable")  # besides the recipe's own


class ShardCountError(StageError):
    """Fewer shards than loader streams (ranks x workers): a setting to fix before training starts."""


class LoaderStalled(RuntimeError):
    """A loader worker delivered no batch in time (most likely a decoder hung in native code)."""


def check_shard_count(num_shards: int, world_size: int, workers: int, split: str, section: str) -> None:
    """Every (rank, loader worker) stream reads its own shards, so there must be at least one per stream."""
    streams = world_size * max(1, workers)
    if num_shards < streams:
        raise ShardCountError(
            f"{section}: split {split!r} has {num_shards} shard(s) but {world_size} rank(s) x {max(1, workers)} "
            f"loader worker(s) = {streams} streams each need at least one. Lower `{section}.loader.workers` (to "
            f"{max(1, num_shards // world_size)} or fewer) or `{section}.launch.nproc_per_node` (only this stage "
            f"reruns), or re-shard with `shard.min_shards: {streams}` or more (every stage reruns)."
        )


def _init_worker(worker_id: int) -> None:
    torch.set_num_threads(1)  # parallelism is across workers
    cv2.setNumThreads(1)


class ClipBatches:
    """Batches of this rank for steps ``[start, end)``, identical to those an uninterrupted run would see."""

    def __init__(self, settings: StreamSettings, layout: Layout, start: int, end: int, loader: LoaderConfig,
                 state_dir: Path, log_every: int = 0) -> None:
        self.settings, self.layout, self.start, self.end = settings, layout, start, end
        self.loader_cfg, self.state_dir, self.log_every = loader, Path(state_dir), log_every
        self.counts: Counter[str] = Counter()  # this attempt, summed over workers
        self.skip_reasons = STREAM_SKIP_REASONS + settings.recipe.skip_reasons

    def _cursor_path(self, step: int) -> Path:
        return self.state_dir / f"cursor.step{step:08d}.rank{self.layout.rank}.json"

    def _layout_key(self) -> dict[str, int]:
        return {"world_size": self.layout.world_size, "workers": self.layout.workers,
                "segment_steps": self.settings.segment_steps, "local_batch": self.settings.local_batch,
                "repeated_views": self.settings.data.repeated_views}

    def resume_cursors(self) -> dict[int, int]:
        """Raw samples each logical worker already used in the segment of ``start`` (none at a boundary)."""
        length, workers = self.settings.segment_steps, self.layout.workers
        if self.start % length == 0:
            return {}
        path = self._cursor_path(self.start)
        if path.is_file():
            saved = json.loads(path.read_text())
            if saved["layout"] == self._layout_key():
                return {int(k): v for k, v in saved["cursors"].items()}
        log.warning("resuming at step %d inside a data segment without a matching loader position (%s): assuming "
                    "no skipped samples, so the data order may differ from an uninterrupted run", self.start, path)
        first = self.start - self.start % length
        return {w: sum(1 for s in range(first, self.start) if s % workers == w) * self.settings.clips_per_batch
                for w in range(workers)}

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        cursors = self.resume_cursors()
        positions = {w: (self.start // self.settings.segment_steps, c) for w, c in cursors.items()}
        worker_counts: dict[int, dict[str, int]] = {}
        workers = self.loader_cfg.workers
        loader = DataLoader(
            ClipBatchStream(self.settings, self.layout, self.start, self.end, cursors),
            batch_size=None, num_workers=workers, worker_init_fn=_init_worker if workers else None,
            multiprocessing_context=loader_context(workers),
            prefetch_factor=self.loader_cfg.prefetch_factor if workers else None,
            timeout=self.loader_cfg.stall_timeout_s if workers else 0, pin_memory=torch.cuda.is_available(),
            generator=torch.Generator().manual_seed(self.settings.seed),  # keeps the global RNG untouched
        )
        batches = iter(loader)
        started = time.monotonic()
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                break
            except RuntimeError as exc:
                if "timed out" in str(exc):
                    raise LoaderStalled(f"no batch from the loader for {self.loader_cfg.stall_timeout_s:g} s "
                                        "(a decoder hung?); rerun to resume from the last checkpoint") from exc
                raise
            worker = batch.pop("worker")
            positions[worker] = (batch.pop("segment"), batch.pop("cursor"))
            worker_counts[worker] = batch.pop("counts")
            self._progress(batch.pop("step") + 1, started, worker_counts)
            yield batch
        self.counts = sum((Counter(c) for c in worker_counts.values()), Counter())
        self._save(positions)

    def _progress(self, done: int, started: float, worker_counts: dict[int, dict[str, int]]) -> None:
        """A log line every ``log_every`` steps on rank 0 (the trainer itself only writes metrics files)."""
        if not self.log_every or self.layout.rank or done % self.log_every:
            return
        rate = (done - self.start) / max(time.monotonic() - started, 1e-9)
        skipped = {k: sum(c.get(k, 0) for c in worker_counts.values()) for k in self.skip_reasons}
        log.info("step %d/%d of this attempt, %.2f steps/s, ETA %.0f s, skipped %s", done, self.end, rate,
                 (self.end - done) / max(rate, 1e-9), {k: v for k, v in skipped.items() if v} or "none")

    def _save(self, positions: dict[int, tuple[int, int]]) -> None:
        """Where each logical worker stands at ``end``, and the running skip counts."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        segment = self.end // self.settings.segment_steps
        cursors = {w: c for w, (s, c) in positions.items() if s == segment}
        atomic_write_json(self._cursor_path(self.end), {"layout": self._layout_key(), "cursors": cursors})
        total_path = self.state_dir / f"counts.rank{self.layout.rank}.json"
        total = Counter(json.loads(total_path.read_text())) if total_path.is_file() else Counter()
        total.update({k: v for k, v in self.counts.items() if k not in PROGRESS_COUNTS})
        atomic_write_json(total_path, dict(total))
        skipped = {k: self.counts[k] for k in self.skip_reasons if self.counts[k]}
        if skipped:
            log.warning("rank %d skipped samples in steps %d-%d: %s", self.layout.rank, self.start, self.end, skipped)


def read_counts(state_dir: Path) -> dict[str, int]:
    """Skip counts summed over ranks and completed attempts."""
    total: Counter[str] = Counter()
    for path in sorted(Path(state_dir).glob("counts.rank*.json")):
        total.update(json.loads(path.read_text()))
    return dict(total)

