"""The artifact store every stage writes through.

Layout under ``<workdir>``::

    <stage>/                      committed output of a stage, ``_SUCCESS.json`` last
    .staging/<stage>/<fp16>/      work in progress for one fingerprint (survives a kill, so a rerun resumes)
        units/<unit>/             finished units (each renamed into place atomically)
        output/                   the stage's outputs before commit
    .trash/                       replaced outputs on their way out

A stage run never writes into ``<stage>/`` directly: it builds ``output/`` and swaps it in with renames, so a
reader sees either the previous complete output or the new complete output, never half of one.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from pipeline.fingerprint import hash_value, sha256_file

STAGE_NAMES = ("shard", "optical_flow", "captions", "pretrain", "finetune", "evaluate")
SUCCESS_FILE = "_SUCCESS.json"
UNIT_FILE = "_UNIT.json"


class OutputFile(BaseModel):
    path: str
    size: int
    sha256: str


class SuccessRecord(BaseModel):
    """What ``_SUCCESS.json`` holds: enough to decide skip/stale and to audit an output."""

    stage: str
    stage_version: str
    fingerprint: str
    output_id: str
    code_version: str
    created_at: str
    config: dict[str, Any]
    upstream: dict[str, str]
    inputs_digest: str | None = None
    outputs: list[OutputFile]
    row_counts: dict[str, int] = {}
    timings: dict[str, float] = {}
    extra: dict[str, Any] = {}


def stage_fingerprint(stage: str, stage_version: str, config: dict[str, Any],
                      upstream: dict[str, str], inputs_digest: str | None) -> str:
    """Hash of everything that determines a stage's output. Upstream outputs enter by their ``output_id``,
    so a recomputed (or forced) upstream makes every downstream stage stale."""
    return hash_value({"stage": stage, "version": stage_version, "config": config,
                       "upstream": upstream, "inputs": inputs_digest})


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, value: Any) -> None:
    atomic_write_bytes(path, json.dumps(value, indent=2, sort_keys=True, default=str).encode())


def _code_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("fils")
    except PackageNotFoundError:
        return "unknown"


def unit_done(units_dir: Path, unit_id: str) -> bool:
    return (units_dir / unit_id / UNIT_FILE).is_file()


def new_unit_tmp(units_dir: Path, unit_id: str) -> Path:
    tmp = units_dir / f".{unit_id}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    return tmp


def seal_unit(units_dir: Path, unit_id: str, tmp: Path, summary: dict[str, Any]) -> None:
    """Seal a finished unit: its summary is written last, then the folder is renamed into place. Safe to call
    from any worker process on the same file system."""
    atomic_write_json(tmp / UNIT_FILE, summary)
    final = units_dir / unit_id
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


class StageRun:
    """One attempt at producing a stage's output for a given fingerprint."""

    def __init__(self, store: "ArtifactStore", stage: str, fingerprint: str):
        self.store = store
        self.stage = stage
        self.fingerprint = fingerprint
        self.root = store.workdir / ".staging" / stage / fingerprint[:16]
        self.units_dir = self.root / "units"
        self.output_dir = self.root / "output"
        self.units_dir.mkdir(parents=True, exist_ok=True)
        for leftover in self.units_dir.glob(".*.tmp-*"):  # units a killed run left unsealed
            shutil.rmtree(leftover, ignore_errors=True)
        # Outputs are rebuilt from the finished units on every attempt.
        shutil.rmtree(self.output_dir, ignore_errors=True)
        self.output_dir.mkdir(parents=True)

    def unit_done(self, unit_id: str) -> bool:
        return unit_done(self.units_dir, unit_id)

    def commit(self, *, stage_version: str, config: dict[str, Any], upstream: dict[str, str],
               inputs_digest: str | None, row_counts: dict[str, int], timings: dict[str, float],
               extra: dict[str, Any] | None = None) -> SuccessRecord:
        outputs = sorted(
            (p for p in self.output_dir.rglob("*") if p.is_file()), key=lambda p: str(p.relative_to(self.output_dir))
        )
        record = SuccessRecord(
            stage=self.stage,
            stage_version=stage_version,
            fingerprint=self.fingerprint,
            output_id=f"{self.fingerprint[:16]}-{uuid.uuid4().hex[:12]}",
            code_version=_code_version(),
            created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            config=config,
            upstream=upstream,
            inputs_digest=inputs_digest,
            outputs=[OutputFile(path=str(p.relative_to(self.output_dir)), size=p.stat().st_size,
                                sha256=sha256_file(p)) for p in outputs],
            row_counts=row_counts,
            timings=timings,
            extra=extra or {},
        )
        atomic_write_json(self.output_dir / SUCCESS_FILE, record.model_dump())
        self.store.swap_in(self.stage, self.output_dir)
        shutil.rmtree(self.root, ignore_errors=True)  # this fingerprint's staging only: others may be resumed
        with contextlib.suppress(OSError):
            self.root.parent.rmdir()  # the stage's staging folder, when nothing else is in it
        return record


class ArtifactStore:
    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)

    def stage_dir(self, stage: str) -> Path:
        if stage not in STAGE_NAMES:
            raise ValueError(f"unknown stage {stage!r}; stages are {', '.join(STAGE_NAMES)}")
        return self.workdir / stage

    def success(self, stage: str) -> SuccessRecord | None:
        marker = self.stage_dir(stage) / SUCCESS_FILE
        if not marker.is_file():
            return None
        try:
            return SuccessRecord.model_validate_json(marker.read_text())
        except ValueError:
            return None  # an unreadable marker means the output cannot be trusted: treat as missing

    def open_run(self, stage: str, fingerprint: str, fresh: bool = False) -> StageRun:
        """Start or resume work for ``fingerprint`` (``fresh``: discard its partial work first). Partial work of
        other fingerprints is never touched: it may be a training run that another config resumes, and a run with
        a mistaken config must not delete it."""
        if fresh:
            shutil.rmtree(self.workdir / ".staging" / stage / fingerprint[:16], ignore_errors=True)
        return StageRun(self, stage, fingerprint)

    def swap_in(self, stage: str, new_output: Path) -> None:
        final = self.stage_dir(stage)
        trash = self.workdir / ".trash" / f"{stage}-{time.time_ns()}"
        trash.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():
            os.replace(final, trash)
        os.replace(new_output, final)
        shutil.rmtree(self.workdir / ".trash", ignore_errors=True)
