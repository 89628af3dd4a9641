"""The per-clip side inputs of pre-training, joined to the shards by clip key: the action box of the
`optical_flow` stage and the caption embedding of the `captions` stage.

Both are held as numpy arrays plus a key -> row index, so DataLoader workers share them cheaply after fork.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.pretrain_data.transforms import Box

ACTION_AREAS_FILE = "action_areas.parquet"  # <workdir>/optical_flow/
EMBEDDINGS_FILE = "embeddings.parquet"  # <workdir>/captions/
BOX_COLUMNS = ("x1", "y1", "x2", "y2")
USABLE_BOX_STATUS = ("ok", "fallback")


class TableError(ValueError):
    """An upstream table is missing or malformed."""


def _read(path: Path, columns: list[str]) -> pa.Table:
    if not path.is_file():
        raise TableError(f"{path} not found: run the stage that writes it first")
    table = pq.read_table(path)
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise TableError(f"{path} lacks column(s) {missing}; found {table.column_names}")
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


def load_embeddings(path: Path) -> tuple[dict[str, int], np.ndarray]:
    """Rows with a non-zero embedding (a zero vector marks a failed caption)."""
    table = _read(path, ["key", "embedding"])
    lists = table.column("embedding").combine_chunks()
    lengths = set(lists.value_lengths().to_numpy(zero_copy_only=False).tolist())
    if len(lengths) > 1:
        raise TableError(f"{path}: embeddings of different widths {sorted(lengths)}")
    dim = lengths.pop() if lengths else 0
    vectors = lists.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(table), dim)
    usable = np.linalg.norm(vectors, axis=1) > 0
    keys = [k for k, ok in zip(table.column("key").to_pylist(), usable) if ok]
    return {k: i for i, k in enumerate(keys)}, np.ascontiguousarray(vectors[usable])


def load_boxes(path: Path) -> tuple[dict[str, int], np.ndarray]:
    """Rows whose status is ``ok`` or ``fallback`` and whose box has an area."""
    table = _read(path, ["key", *BOX_COLUMNS, "status"])
    boxes = np.stack([table.column(c).to_numpy(zero_copy_only=False) for c in BOX_COLUMNS], axis=1)
    boxes = boxes.astype(np.float32)
    status = table.column("status").to_pylist()
    usable = [s in USABLE_BOX_STATUS and bool(np.all(np.isfinite(b))) and b[2] > b[0] and b[3] > b[1]
              for s, b in zip(status, boxes)]
    keys = [k for k, ok in zip(table.column("key").to_pylist(), usable) if ok]
    return {k: i for i, k in enumerate(keys)}, np.ascontiguousarray(boxes[np.array(usable, dtype=bool)])


def load_tables(action_areas: Path, embeddings: Path) -> ClipTables:
    embedding_rows, vectors = load_embeddings(embeddings)
    box_rows, boxes = load_boxes(action_areas)
    return ClipTables(embedding_rows, vectors, box_rows, boxes.reshape(-1, 4))
