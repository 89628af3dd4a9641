"""The outputs of the `captions` stage, read by the pretrain stage (``<workdir>/captions/``).

``captions.parquet``: one row per clip. ``status`` is ``ok`` exactly when ``caption`` is non-empty; otherwise
the caption is ``""`` and the status says why (``failed: ...`` the clip could not be decoded, ``missing: ...``
no narration / no row in the caption file, ``empty: ...`` the model generated no text).

``embeddings.parquet``: one row per clip, same keys. ``embedding`` is the L2-normalised text embedding of an
``ok`` caption and a zero vector otherwise (an empty string has no meaning to embed): loaders skip rows whose
caption status is not ``ok`` (equivalently, whose embedding has norm 0).
"""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

CAPTIONS_FILE = "captions.parquet"
EMBEDDINGS_FILE = "embeddings.parquet"
STATUS_OK = "ok"

CAPTION_SCHEMA = pa.schema([
    pa.field("key", pa.string(), nullable=False),
    pa.field("shard", pa.string(), nullable=False),
    pa.field("caption", pa.string(), nullable=False),
    pa.field("status", pa.string(), nullable=False),
    pa.field("source", pa.string(), nullable=False),  # videoblip | narration | file
    pa.field("model_id", pa.string()),  # captioner checkpoint (hub id or folder); file path for `file`
    pa.field("model_revision", pa.string()),  # hub commit or sha256 of the checkpoint folder / caption file
    pa.field("prompt", pa.string()),  # null unless source=videoblip
    pa.field("generation", pa.string()),  # generation settings as JSON; null unless source=videoblip
], metadata={"fils.table": "captions", "fils.schema_version": "1"})

EMBEDDING_SCHEMA = pa.schema([
    pa.field("key", pa.string(), nullable=False),
    pa.field("embedding", pa.list_(pa.float32()), nullable=False),
    pa.field("encoder_id", pa.string(), nullable=False),
    pa.field("dim", pa.int32(), nullable=False),
], metadata={"fils.table": "caption_embeddings", "fils.schema_version": "1"})


def write_parquet(table: pa.Table, path: Path) -> None:
    pq.write_table(table, path, compression="zstd")


def _read(stage_dir: Path, name: str, columns: list[str] | None = None) -> pa.Table:
    path = Path(stage_dir) / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the captions stage first "
                                "(fils run -c CONFIG --stages captions)")
    return pq.read_table(path, columns=columns)


def read_captions(stage_dir: Path) -> pa.Table:
    """``captions.parquet`` of a committed captions stage (``<workdir>/captions``)."""
    return _read(stage_dir, CAPTIONS_FILE)


def read_embeddings(stage_dir: Path) -> pa.Table:
    """``embeddings.parquet`` of a committed captions stage (``<workdir>/captions``)."""
    return _read(stage_dir, EMBEDDINGS_FILE)


def text_encoder_id(stage_dir: Path) -> str | None:
    """The identity of the text encoder whose space the committed caption embeddings are in (None: no rows)."""
    ids = _read(stage_dir, EMBEDDINGS_FILE, ["encoder_id"]).column("encoder_id").to_pylist()
    return ids[0] if ids else None
