"""Parquet manifests of the shard stage: ``clips.parquet`` (one row per clip) and ``rejects.parquet``."""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

CLIPS_FILE = "clips.parquet"
REJECTS_FILE = "rejects.parquet"

CLIP_SCHEMA = pa.schema([
    pa.field("key", pa.string(), nullable=False),
    pa.field("shard", pa.string(), nullable=False),
    pa.field("split", pa.string(), nullable=False),
    pa.field("source_path", pa.string(), nullable=False),
    pa.field("start", pa.float64()),  # seconds in the source video
    pa.field("end", pa.float64()),
    pa.field("fps", pa.float64()),  # of the stored clip
    pa.field("num_frames", pa.int32()),
    pa.field("frame_offset", pa.int32()),  # first frame of the clip in the stored video (0 when re-encoded)
    pa.field("width", pa.int32()),
    pa.field("height", pa.int32()),
    pa.field("label", pa.int32()),
    pa.field("label_name", pa.string()),
    pa.field("verb_class", pa.int32()),
    pa.field("noun_class", pa.int32()),
    pa.field("labels", pa.list_(pa.int32())),
    pa.field("narration", pa.string()),
], metadata={"fils.table": "clips", "fils.schema_version": "1"})

REJECT_SCHEMA = pa.schema([
    pa.field("source_path", pa.string(), nullable=False),
    pa.field("key", pa.string()),  # null when the whole video was rejected
    pa.field("reason", pa.string(), nullable=False),
    pa.field("split", pa.string()),  # the split of the clips this row loses
    pa.field("clips", pa.int32()),  # annotated clips this row loses (a whole video: all of its clips of the split)
], metadata={"fils.table": "rejects", "fils.schema_version": "2"})


def read_clips(shard_dir: Path, columns: list[str] | None = None) -> pa.Table:
    """The clip manifest of a committed shard stage (``<workdir>/shard``)."""
    path = Path(shard_dir) / CLIPS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the shard stage first (fils run -c CONFIG --stages shard)")
    return pq.read_table(path, columns=columns)


def class_names(shard_dir: Path) -> list[str]:
    """Index -> name of the single-label / action classes, from clips.parquet."""
    table = read_clips(shard_dir, ["label", "label_name"]).to_pydict()
    names: dict[int, str] = {}
    for label, name in zip(table["label"], table["label_name"]):
        if label is not None and label >= 0 and name:
            names[label] = name
    return [names.get(i, "") for i in range(max(names, default=-1) + 1)]
