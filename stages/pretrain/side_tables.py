"""The per-clip side inputs of pre-training, joined to the shards by clip key: the action box of the
`optical_flow` stage and the caption embedding of the `captions` stage.

Both are held as numpy arrays plus a key -> row index, so DataLoader workers share them cheaply after fork.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipeline.video.transforms import Box
from stages.captions.tables import read_embeddings
from stages.optical_flow.tables import USABLE_STATUSES, read_action_areas

BOX_COLUMNS = ("x1", "y1", "x2", "y2")


class TableError(ValueError):
    """An upstream table is malformed."""


def _columns(table: pa.Table, columns: list[str], what: str) -> pa.Table:
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise TableError(f"{what} lacks column(s) {missing}; found {table.column_names}")
    return table.select(columns)


@dataclass
class ClipTables:
    """Caption embeddings (usable rows only) and action boxes, by clip key."""

    embedding_rows: dict[str, int]
    embeddings: np.ndarray  # (rows, dim) float32
    box_rows: dict[str, int]
    boxes: np.ndarray  # (rows, 4) float32, normalised x1, y1, x2, y2

    @property
    def text_dim(self) -> int:
        return int(self.embeddings.shape[1])

    def embedding(self, key: str) -> np.ndarray | None:
        row = self.embedding_rows.get(key)
        return None if row is None else self.embeddings[row]

    def box(self, key: str) -> Box | None:
        row = self.box_rows.get(key)
        return None if row is None else tuple(float(v) for v in self.boxes[row])  # type: ignore[return-value]


def load_embeddings(captions_dir: Path) -> tuple[dict[str, int], np.ndarray]:
    """Rows with a non-zero embedding (a zero vector marks a failed caption)."""
    path = f"the caption embeddings of {captions_dir}"
    table = _columns(read_embeddings(captions_dir), ["key", "embedding"], path)
    lists = table.column("embedding").combine_chunks()
    lengths = set(lists.value_lengths().to_numpy(zero_copy_only=False).tolist())
    if len(lengths) > 1:
        raise TableError(f"{path}: embeddings of different widths {sorted(lengths)}")
    dim = lengths.pop() if lengths else 0
    vectors = lists.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(table), dim)
    usable = np.linalg.norm(vectors, axis=1) > 0
    keys = [k for k, ok in zip(table.column("key").to_pylist(), usable) if ok]
    return {k: i for i, k in enumerate(keys)}, np.ascontiguousarray(vectors[usable])


def load_boxes(optical_flow_dir: Path) -> tuple[dict[str, int], np.ndarray]:
    """Rows whose status carries a box (``ok``, ``fallback``) and whose box has an area."""
    columns = ["key", *BOX_COLUMNS, "status"]
    table = _columns(read_action_areas(optical_flow_dir), columns, f"the action areas of {optical_flow_dir}")
    boxes = np.stack([table.column(c).to_numpy(zero_copy_only=False) for c in BOX_COLUMNS], axis=1)
    boxes = boxes.astype(np.float32)
    status = table.column("status").to_pylist()
    usable = [s in USABLE_STATUSES and bool(np.all(np.isfinite(b))) and b[2] > b[0] and b[3] > b[1]
              for s, b in zip(status, boxes)]
    keys = [k for k, ok in zip(table.column("key").to_pylist(), usable) if ok]
    return {k: i for i, k in enumerate(keys)}, np.ascontiguousarray(boxes[np.array(usable, dtype=bool)])


def load_tables(optical_flow_dir: Path, captions_dir: Path) -> ClipTables:
    """The side inputs from the committed outputs of the two stages, read through their readers."""
    embedding_rows, vectors = load_embeddings(captions_dir)
    box_rows, boxes = load_boxes(optical_flow_dir)
    return ClipTables(embedding_rows, vectors, box_rows, boxes.reshape(-1, 4))
