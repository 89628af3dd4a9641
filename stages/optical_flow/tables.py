"""``<workdir>/optical_flow/action_areas.parquet``: one row per clip of ``clips.parquet``."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.tables import write_table

ACTION_AREAS_FILE = "action_areas.parquet"
USABLE_STATUSES = ("ok", "fallback")  # the rows that carry a box

ACTION_AREA_SCHEMA = pa.schema([
    pa.field("key", pa.string(), nullable=False),
    pa.field("status", pa.string(), nullable=False),  # ok | fallback (centre box) | failed (no box)
    pa.field("reason", pa.string()),  # why fallback / failed; null when ok
    pa.field("backend", pa.string(), nullable=False),  # tvl1 | dis | farneback
    # Union box over the clip, normalised to [0, 1] of the stored clip; null when failed.
    pa.field("x1", pa.float32()),
    pa.field("y1", pa.float32()),
    pa.field("x2", pa.float32()),
    pa.field("y2", pa.float32()),
    pa.field("motion", pa.float32()),  # motion score: px per frame at optical_flow.reference_short_side
    pa.field("frame_indices", pa.list_(pa.int32())),  # clip frames that got a per-frame box
    pa.field("frame_boxes", pa.list_(pa.list_(pa.float32(), 4))),  # normalised x1, y1, x2, y2 per frame
], metadata={"fils.table": "action_areas", "fils.schema_version": "1"})


def write_action_areas(rows: list[dict[str, Any]], path: Path) -> None:
    write_table(rows, ACTION_AREA_SCHEMA, path)


def read_action_areas(stage_dir: Path, columns: list[str] | None = None) -> pa.Table:
    """The action areas of a committed optical_flow stage (``<workdir>/optical_flow``)."""
    path = Path(stage_dir) / ACTION_AREAS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the optical_flow stage first "
                                "(fils run -c CONFIG --stages optical_flow)")
    return pq.read_table(path, columns=columns)
