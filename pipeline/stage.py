"""The contract every stage implements, so one runner (CLI or Prefect) can plan, resume and commit it.

A stage splits its work into units (one source video, one shard, ...). ``process`` handles one unit in a
worker process and writes into a fresh folder that is sealed atomically; ``finalize`` assembles the units
into the stage's outputs. A killed run therefore redoes only the units that were not sealed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from pipeline.artifacts import SuccessRecord
from pipeline.config import CoreConfig


@dataclass(frozen=True)
class Unit:
    id: str  # a file-name-safe identifier, stable across runs
    payload: dict[str, Any] = field(default_factory=dict)  # small, JSON-able
    size_bytes: int = 0  # the input it reads, when known: batches are capped by it (pipeline/batching.py)


@dataclass
class StageContext:
    cfg: CoreConfig
    stage: str
    workdir: Path
    upstream: dict[str, SuccessRecord]
    output_dir: Path
    units_dir: Path

    def upstream_dir(self, stage: str) -> Path:
        if stage not in self.upstream:
            raise KeyError(f"stage {self.stage!r} did not declare {stage!r} as an upstream stage")
        return self.workdir / stage

    def unit_dir(self, unit_id: str) -> Path:
        return self.units_dir / unit_id


@dataclass
class StageResult:
    row_counts: dict[str, int]
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StageSpec:
    name: str
    version: str  # bump when the meaning of the outputs changes
    upstream: tuple[str, ...]  # every stage it may read: the edges of the DAG
    config_of: Callable[[CoreConfig], dict[str, Any]]  # the settings that change the outputs
    plan: Callable[[StageContext], list[Unit]]
    process: Callable[[StageContext, Unit, Path], dict[str, Any]]  # module-level: runs in worker processes
    finalize: Callable[[StageContext, list[Unit]], StageResult]  # runs only when every unit is sealed
    inputs_digest: Callable[[CoreConfig], str] | None = None  # identity of raw inputs (first stage only)
    # Time limit of one unit when it is not runtime.unit_timeout_s (None inside: no limit, e.g. a training run).
    unit_timeout_s: Callable[[CoreConfig], float | None] | None = None
    # Output files that record how the output was made (logs, throughput), not what it is: committed and verified
    # like the others but left out of the output id, so a rerun that gives the same results keeps later stages.
    log_files: tuple[str, ...] = ()  # fnmatch patterns, relative to the output folder
    # The upstream stages a config reads, each with why (shown when it is missing); default: all of ``upstream``.
    # E.g. finetune reads pretrain only when it starts from its encoder. Only these must be committed, and only
    # their outputs enter the fingerprint.
    needs: Callable[[CoreConfig], Mapping[str, str]] | None = None
    # The config sections whose settings the stage reads (dotted paths), and the settings under them that do not
    # change its outputs (fnmatch patterns: batch sizes, workers, time limits). Every other setting under
    # ``sections`` must reach the fingerprint through ``config_of`` (tests/stages/test_fingerprint_coverage.py checks it).
    sections: tuple[str, ...] = ()
    runtime_only: tuple[str, ...] = ()
    # Whether a config's units each need a GPU (a captioner): they then run in unit workers pinned one GPU each
    # (runtime.gpus, runtime.workers_per_gpu; pipeline/gpus.py).
    units_on_gpu: Callable[[CoreConfig], bool] | None = None
    # GPUs a config's run occupies otherwise (a training stage's processes). Under Prefect a run holds one slot of
    # runtime.gpu_slots per GPU it uses, pinned or held.
    gpus_held: Callable[[CoreConfig], int] | None = None

    def upstream_for(self, cfg: CoreConfig) -> tuple[str, ...]:
        """The upstream stages this config reads, in the order of ``upstream``."""
        return tuple(self.upstream_reasons(cfg))

    def upstream_reasons(self, cfg: CoreConfig) -> dict[str, str]:
        """Upstream stage -> why this config reads it ("" when the stage always does)."""
        if self.needs is None:
            return {name: "" for name in self.upstream}
        needed = self.needs(cfg)
        undeclared = set(needed) - set(self.upstream)
        if undeclared:
            raise ValueError(f"stage {self.name!r} needs undeclared upstream stage(s) {sorted(undeclared)}")
        return {name: needed[name] for name in self.upstream if name in needed}
