"""Dispatch from ``data.source.kind`` to its adapter, and keep only the configured splits."""
from __future__ import annotations

from dataclasses import replace

from stages.shard.adapters.base import AdapterResult, AnnotationError, ClipSpec
from stages.shard.source_config import ADAPTERS, SourceConfig


def list_clips(source: SourceConfig) -> AdapterResult:
    result: AdapterResult = ADAPTERS.load(source.kind)(source)
    if source.splits is not None:
        result = replace(result, clips=[c for c in result.clips if c.split in source.splits])
    check_unique_keys(result.clips)
    return result


def check_unique_keys(clips: list[ClipSpec]) -> None:
    """Two clips with one key would overwrite each other in the shards (``a.mp4`` next to ``a.mkv``, names that
    differ only in characters keys cannot hold): refuse the listing, naming the files."""
    seen: dict[str, ClipSpec] = {}
    collisions = []
    for clip in clips:
        first = seen.setdefault(clip.key, clip)
        if first is not clip:
            collisions.append(f"{first.source_name!r} and {clip.source_name!r} (key {clip.key!r})")
    if collisions:
        raise AnnotationError(f"{len(collisions)} clip key collision(s): {'; '.join(collisions[:5])}. Keys are made "
                              "from file names with unsafe characters replaced; rename one file of each pair")
