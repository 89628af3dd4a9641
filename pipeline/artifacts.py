"""The artifact store every stage writes through.

Layout under ``<workdir>``::

    <stage> -> .outputs/<stage>/<dir>   the committed output of a stage: a symbolic link
    .outputs/<stage>/<dir>/             committed outputs (never modified), ``_SUCCESS.json`` written last
    .staging/<stage>/<fp16>/            work in progress for one fingerprint (survives a kill: a rerun resumes)
        units/<unit>/                   finished units (each renamed into place atomically)
        output/                         the stage's outputs before commit

A stage run never writes into a committed output. It builds ``output/``, fsyncs it, moves it under ``.outputs``
and then switches the link with one atomic rename, so a crash at any point leaves either the previous complete
output or the new one in place, never half of one and never none (docs/cache.md). The output id is derived from
the content, so a rerun that produces the same bytes keeps every downstream stage up to date.
"""
from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import re
import shutil
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from pydantic import BaseModel

from pipeline.fingerprint import hash_value, sha256_file

STAGE_NAME = re.compile(r"[a-z][a-z0-9_]*")  # a stage is a folder of the workdir and a Python package
SUCCESS_FILE = "_SUCCESS.json"
OUTPUTS_DIR = ".outputs"
SWITCH_JOURNAL = "_SWITCHING"  # in .outputs/<stage>/ while an old-layout output is moved aside
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


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """Flush every file and directory under ``root`` to disk (before a marker says they are complete)."""
    for folder, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(folder, name), "rb") as fh:
                os.fsync(fh.fileno())
        fsync_dir(Path(folder))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def atomic_write_json(path: Path, value: Any) -> None:
    atomic_write_bytes(path, json.dumps(value, indent=2, sort_keys=True, default=str).encode())


def content_id(files: list[OutputFile], log_files: tuple[str, ...] = ()) -> str:
    """The identity of an output: a hash of its files' names and contents (not of when or how it was made: files
    matching ``log_files`` are left out)."""
    return hash_value([(f.path, f.sha256) for f in files
                       if not any(fnmatch.fnmatchcase(f.path, pattern) for pattern in log_files)])[:24]


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
    fsync_tree(tmp)
    atomic_write_json(tmp / UNIT_FILE, summary)
    final = units_dir / unit_id
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


def _output_name() -> str:
    """Folder name of a committed output under ``.outputs/<stage>/``: sorts by commit time."""
    return f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"


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
               extra: dict[str, Any] | None = None, log_files: tuple[str, ...] = ()) -> SuccessRecord:
        outputs = sorted(
            (p for p in self.output_dir.rglob("*") if p.is_file()), key=lambda p: str(p.relative_to(self.output_dir))
        )
        files = [OutputFile(path=str(p.relative_to(self.output_dir)), size=p.stat().st_size, sha256=sha256_file(p))
                 for p in outputs]
        record = SuccessRecord(
            stage=self.stage,
            stage_version=stage_version,
            fingerprint=self.fingerprint,
            output_id=content_id(files, log_files),
            code_version=_code_version(),
            created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            config=config,
            upstream=upstream,
            inputs_digest=inputs_digest,
            outputs=files,
            row_counts=row_counts,
            timings=timings,
            extra=extra or {},
        )
        fsync_tree(self.output_dir)
        atomic_write_json(self.output_dir / SUCCESS_FILE, record.model_dump())
        self.store.swap_in(self.stage, self.output_dir)
        shutil.rmtree(self.root, ignore_errors=True)  # this fingerprint's staging only: others may be resumed
        with contextlib.suppress(OSError):
            self.root.parent.rmdir()  # the stage's staging folder, when nothing else is in it
        return record


class ArtifactStore:
    """The committed outputs under ``workdir``, one folder per stage. Given ``stages`` (the registry), a name
    outside it is refused, so a misspelt stage never reads as "not committed"."""

    def __init__(self, workdir: Path, stages: Iterable[str] | None = None):
        self.workdir = Path(workdir)
        self.stages = None if stages is None else tuple(stages)

    def stage_dir(self, stage: str) -> Path:
        if self.stages is not None and stage not in self.stages:
            raise ValueError(f"unknown stage {stage!r}; stages are {', '.join(self.stages)}")
        if not STAGE_NAME.fullmatch(stage):
            raise ValueError(f"invalid stage name {stage!r}: lower-case letters, digits and _")
        return self.workdir / stage

    def success(self, stage: str) -> SuccessRecord | None:
        self.recover(stage)
        marker = self.stage_dir(stage) / SUCCESS_FILE
        if not marker.is_file():
            return None
        try:
            return SuccessRecord.model_validate_json(marker.read_text())
        except ValueError:
            return None  # an unreadable marker means the output cannot be trusted: treat as missing

    def verify(self, stage: str, record: SuccessRecord, checksums: bool = False) -> list[str]:
        """What is wrong with a committed output: files its marker lists that are missing or have another size
        (or, with ``checksums``, other contents). Empty when the output is intact."""
        root = self.stage_dir(stage)
        problems = []
        for entry in record.outputs:
            path = root / entry.path
            if not path.is_file():
                problems.append(f"{entry.path}: missing")
            elif (size := path.stat().st_size) != entry.size:
                problems.append(f"{entry.path}: {size} bytes, committed with {entry.size}")
            elif checksums and sha256_file(path) != entry.sha256:
                problems.append(f"{entry.path}: contents changed since the commit (sha256)")
        return problems

    def open_run(self, stage: str, fingerprint: str, fresh: bool = False) -> StageRun:
        """Start or resume work for ``fingerprint`` (``fresh``: discard its partial work first). Partial work of
        other fingerprints is never touched: it may be a training run that another config resumes, and a run with
        a mistaken config must not delete it."""
        if fresh:
            shutil.rmtree(self.workdir / ".staging" / stage / fingerprint[:16], ignore_errors=True)
        return StageRun(self, stage, fingerprint)

    def outputs_dir(self, stage: str) -> Path:
        return self.workdir / OUTPUTS_DIR / stage

    def swap_in(self, stage: str, new_output: Path) -> None:
        """Make ``new_output`` (complete, fsynced, with its marker) the stage's committed output.

        The folder is moved under ``.outputs/<stage>/`` and the ``<stage>`` link is replaced by one atomic rename;
        the replaced output is deleted only after the switch is on disk."""
        final = self.stage_dir(stage)
        outputs = self.outputs_dir(stage)
        outputs.mkdir(parents=True, exist_ok=True)
        for leftover in self.workdir.glob(f".{stage}.link-*"):  # a link a crash left unused
            leftover.unlink()
        journal = outputs / SWITCH_JOURNAL
        if final.is_dir() and not final.is_symlink():  # a workdir from before the link layout (or copied by value)
            atomic_write_bytes(journal, b"")  # the output is off its path until the link is made: see recover()
            os.replace(final, outputs / _output_name())
            fsync_dir(outputs)
        target = outputs / _output_name()
        os.replace(new_output, target)
        fsync_dir(outputs)
        self._link(stage, target)
        journal.unlink(missing_ok=True)
        for old in outputs.iterdir():  # replaced outputs, and files a crash left half-written
            if old == target:
                continue
            if old.is_dir():
                shutil.rmtree(old)
            else:
                old.unlink()

    def _link(self, stage: str, target: Path) -> None:
        final = self.stage_dir(stage)
        link = final.with_name(f".{stage}.link-{uuid.uuid4().hex[:8]}")
        os.symlink(os.path.relpath(target, final.parent), link)
        os.replace(link, final)
        fsync_dir(final.parent)

    def recover(self, stage: str) -> None:
        """Finish a switch that a crash interrupted after an old-layout output was moved aside and before the
        link was made: point the link at the newest complete output."""
        journal = self.outputs_dir(stage) / SWITCH_JOURNAL
        if not journal.is_file():
            return
        final = self.stage_dir(stage)
        if not (final.exists() or final.is_symlink()):
            complete = sorted(d for d in journal.parent.iterdir() if (d / SUCCESS_FILE).is_file())
            if complete:
                self._link(stage, complete[-1])
        journal.unlink()
