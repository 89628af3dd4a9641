"""The results table: one row per (benchmark, checkpoint, protocol, views, metric) evaluation, kept across
runs in a parquet file outside any stage folder. Writes hold an exclusive lock and replace the file atomically,
so the evaluate stage and the nightly sweep can run side by side."""
from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.tables import write_table

RESULT_SCHEMA = pa.schema([
    pa.field("benchmark", pa.string(), nullable=False),
    pa.field("checkpoint", pa.string(), nullable=False),  # fingerprint: sha256 of the weights file, 16 hex
    pa.field("checkpoint_path", pa.string()),
    # a classifier's training mode (full, linear_probe; +ema, +random_init), or a frozen-encoder evaluation:
    # linear_probe_sweep, attentive_probe_sweep, zero_shot, retrieval, epic_mir
    pa.field("protocol", pa.string(), nullable=False),
    pa.field("metric", pa.string(), nullable=False),
    pa.field("value", pa.float64(), nullable=False),
    pa.field("views", pa.string(), nullable=False),  # temporal x spatial, e.g. 5x3
    pa.field("clips", pa.int64()),  # clips scored
    pa.field("excluded", pa.int64()),  # clips of the split not scored (rejected by the shard stage, undecodable)
    pa.field("timestamp", pa.timestamp("s", tz="UTC"), nullable=False),
    pa.field("step", pa.int64()),  # training step of the checkpoint, when it says (trend plots' x axis)
], metadata={"fils.table": "results", "fils.schema_version": "3"})

EvalKey = tuple[str, str, str, str]  # benchmark, checkpoint, protocol, views


def result_rows(benchmark: str, checkpoint: str, checkpoint_path: Path, protocol: str, views: str,
                metrics: dict[str, float], clips: int, excluded: int, step: int | None = None
                ) -> list[dict[str, Any]]:
    now = datetime.now(timezone.utc).replace(microsecond=0)
    return [{"benchmark": benchmark, "checkpoint": checkpoint, "checkpoint_path": str(checkpoint_path),
             "protocol": protocol, "metric": name, "value": float(value), "views": views, "clips": clips,
             "excluded": excluded, "timestamp": now, "step": step} for name, value in metrics.items()]


def write_rows(rows: list[dict[str, Any]], path: Path) -> None:
    write_table(rows, RESULT_SCHEMA, path)


def read_results(path: Path) -> list[dict[str, Any]]:
    return pq.read_table(path).to_pylist() if Path(path).is_file() else []


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _row_key(row: dict[str, Any]) -> tuple[str, ...]:
    return row["benchmark"], row["checkpoint"], row["protocol"], row["views"], row["metric"]


def record_results(path: Path, rows: list[dict[str, Any]]) -> None:
    """Add ``rows``, replacing any row of the same evaluation (benchmark, checkpoint, protocol, views, metric):
    a rerun or a forced re-evaluation updates its rows instead of duplicating them."""
    path = Path(path)
    replaced = {_row_key(r) for r in rows}
    with _locked(path):
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        write_rows([r for r in read_results(path) if _row_key(r) not in replaced] + rows, tmp)
        os.replace(tmp, path)


def evaluated_keys(path: Path) -> set[EvalKey]:
    return {(r["benchmark"], r["checkpoint"], r["protocol"], r["views"]) for r in read_results(path)}
