"""WebDataset tar shards of clips: ``shards/<split>-NNNNNN.tar`` holding ``<key>.mp4`` and ``<key>.json``.

Shards are written in a fixed order (key order, or the seeded shuffle of :func:`shuffled`) with ``mtime=0`` and
fixed ownership, so the same clips always give the same bytes whatever the worker count or rerun.
"""
from __future__ import annotations

import hashlib
import json
import math
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

SHARDS_SUBDIR = "shards"


@dataclass(frozen=True)
class ShardItem:
    key: str
    video: Path  # the encoded clip on disk
    meta: dict[str, Any]


@dataclass
class ShardSample:
    key: str
    mp4: bytes
    meta: dict[str, Any]


def shuffled(items: list[ShardItem], seed: int) -> list[ShardItem]:
    """A seeded global shuffle: items ordered by a hash of (seed, key), so each shard is a random sample of the
    split (not the neighbouring clips of a few videos) and the order depends on nothing but the keys."""
    return sorted(items, key=lambda item: hashlib.sha256(f"{seed}:{item.key}".encode()).digest())


def plan_shards(items: list[ShardItem], target_bytes: float, max_count: int, min_shards: int) -> list[list[ShardItem]]:
    """Group items (in their shard order) into shards by size and count, with at least ``min_shards``
    shards when there are enough items (every rank and loader worker must get one)."""
    if not items:
        return []
    cap = min(max_count, max(1, math.ceil(len(items) / min_shards)))
    groups: list[list[ShardItem]] = [[]]
    size = 0
    for item in items:
        item_size = item.video.stat().st_size
        if groups[-1] and (len(groups[-1]) >= cap or size + item_size > target_bytes):
            groups.append([])
            size = 0
        groups[-1].append(item)
        size += item_size
    return groups


# webdataset is imported where it is used: it imports torch, which a shard or flow worker (and `fils status`)
# does not otherwise need, and every spawned worker would pay for.
def write_shard(path: Path, items: list[ShardItem]) -> None:
    import webdataset as wds

    with open(path, "wb") as fh:
        writer = wds.TarWriter(fh, user="fils", group="fils", mtime=0, encoder=False)
        try:
            for item in items:
                writer.write({"__key__": item.key, "mp4": item.video.read_bytes(),
                              "json": json.dumps(item.meta, sort_keys=True).encode()})
        except BaseException:
            with suppress(OSError):  # a full disk fails the close too; mark the tar closed, keep the first error
                writer.tarstream.close()
            raise
        writer.close()


def shard_paths(shard_stage_dir: Path, split: str | None = None) -> list[Path]:
    pattern = f"{split}-*.tar" if split else "*.tar"
    return sorted((Path(shard_stage_dir) / SHARDS_SUBDIR).glob(pattern))


def iter_shard(path: Path) -> Iterator[ShardSample]:
    import webdataset as wds

    # A list, not a string: WebDataset splits a string at "::" and expands braces, which a workdir may contain.
    dataset = wds.WebDataset([str(Path(path).absolute())], shardshuffle=False, empty_check=False)
    for sample in dataset:
        yield ShardSample(sample["__key__"], sample["mp4"], json.loads(sample["json"]))
