"""Shard tars written sample by sample, for tests that need shards the shard stage would never write (a clip
that does not decode, shards split differently)."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.shards import ShardSample


def write_tar(path: Path, samples: list[ShardSample]) -> None:
    import webdataset as wds

    with wds.TarWriter(str(path), encoder=False) as writer:
        for s in samples:
            writer.write({"__key__": s.key, "mp4": s.mp4, "json": json.dumps(s.meta).encode()})
