"""Plan and run stages through the artifact store: skip what is done, resume what was interrupted,
recompute what is stale or forced. Both the CLI and the Prefect flows call this module."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

from pipeline.artifacts import STAGE_NAMES, ArtifactStore, SuccessRecord, stage_fingerprint
from pipeline.config import FilsConfig
from pipeline.parallel import run_units
from pipeline.stage import StageContext, StageSpec, Unit

log = logging.getLogger("fils.runner")

State = Literal["done", "stale", "missing"]


class StageError(RuntimeError):
    """A stage cannot run (missing upstream output, nothing usable left, ...)."""


@dataclass
class StageStatus:
    stage: str
    state: State
    fingerprint: str | None  # what the stage would be computed with now (None: upstream missing)
    recorded_fingerprint: str | None
    row_counts: dict[str, int] = field(default_factory=dict)
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


@dataclass
class StageOutcome:
    stage: str
    action: Literal["skipped", "ran"]
    record: SuccessRecord
    failures: dict[str, str] = field(default_factory=dict)


def _ordered(names: list[str] | tuple[str, ...]) -> list[str]:
    unknown = [n for n in names if n not in STAGE_NAMES]
    if unknown:
        raise StageError(f"unknown stage(s) {', '.join(unknown)}; stages are {', '.join(STAGE_NAMES)}")
    return [n for n in STAGE_NAMES if n in names]


def current_fingerprint(spec: StageSpec, cfg: FilsConfig, store: ArtifactStore) -> tuple[str | None, dict[str, str], str | None]:
    """Fingerprint from the config and the committed upstream outputs (None when an upstream is missing)."""
    upstream: dict[str, str] = {}
    for name in spec.upstream:
        record = store.success(name)
        if record is None:
            return None, {}, None
        upstream[name] = record.output_id
    digest = spec.inputs_digest(cfg) if spec.inputs_digest else None
    return stage_fingerprint(spec.name, spec.version, spec.config_of(cfg), upstream, digest), upstream, digest


def pipeline_status(specs: Mapping[str, StageSpec], cfg: FilsConfig, store: ArtifactStore) -> list[StageStatus]:
    statuses: dict[str, StageStatus] = {}
    for name in _ordered(list(specs)):
        spec = specs[name]
        record = store.success(name)
        fingerprint, _, _ = current_fingerprint(spec, cfg, store)
        bad_upstream = [u for u in spec.upstream if u not in statuses or statuses[u].state != "done"]
        if record is None:
            state, reason = "missing", "never run" if not bad_upstream else f"needs {', '.join(bad_upstream)}"
        elif bad_upstream:
            state, reason = "stale", f"upstream {', '.join(bad_upstream)} not up to date"
        elif record.fingerprint != fingerprint:
            state, reason = "stale", "config, code version or inputs changed"
        else:
            state, reason = "done", ""
        statuses[name] = StageStatus(name, state, fingerprint, record.fingerprint if record else None,
                                     dict(record.row_counts) if record else {}, reason)
    return list(statuses.values())


def run_stage(spec: StageSpec, cfg: FilsConfig, store: ArtifactStore, force: bool = False) -> StageOutcome:
    fingerprint, upstream, digest = current_fingerprint(spec, cfg, store)
    if fingerprint is None:
        missing = [u for u in spec.upstream if store.success(u) is None]
        raise StageError(f"stage {spec.name!r} needs the output of {', '.join(missing)}; "
                         f"run `fils run -c CONFIG --stages {','.join([*missing, spec.name])}` first")
    existing = store.success(spec.name)
    if not force and existing is not None and existing.fingerprint == fingerprint:
        log.info("%s: up to date (fingerprint %s), skipped", spec.name, fingerprint[:12])
        return StageOutcome(spec.name, "skipped", existing)

    started = time.time()
    run = store.open_run(spec.name, fingerprint, fresh=force)
    ctx = StageContext(cfg=cfg, stage=spec.name, workdir=store.workdir,
                       upstream={u: store.success(u) for u in spec.upstream},  # type: ignore[misc]
                       output_dir=run.output_dir, units_dir=run.units_dir)
    units = spec.plan(ctx)
    pending = [u for u in units if not run.unit_done(u.id)]
    log.info("%s: %d units, %d already done, %d to run", spec.name, len(units), len(units) - len(pending), len(pending))
    tmp_dirs = {u.id: run.new_unit_tmp(u.id) for u in pending}
    failures = run_units(
        spec.process, [(u.id, (ctx, u, tmp_dirs[u.id])) for u in pending],
        workers=cfg.runtime.workers, timeout_s=cfg.runtime.unit_timeout_s,
        on_result=lambda unit_id, summary: run.finish_unit(unit_id, tmp_dirs[unit_id], summary),
        desc=spec.name,
    )
    processed = time.time()
    result = spec.finalize(ctx, units, failures)
    record = run.commit(
        stage_version=spec.version, config=spec.config_of(cfg), upstream=upstream, inputs_digest=digest,
        row_counts=result.row_counts,
        timings={"process_s": round(processed - started, 3), "finalize_s": round(time.time() - processed, 3),
                 "total_s": round(time.time() - started, 3), "units": len(units), "units_run": len(pending)},
        extra={**result.extra, "unit_failures": failures},
    )
    log.info("%s: committed %s (%s)", spec.name, record.output_id,
             ", ".join(f"{k}={v}" for k, v in record.row_counts.items()))
    return StageOutcome(spec.name, "ran", record, failures)


def run_pipeline(specs: Mapping[str, StageSpec], cfg: FilsConfig, stages: list[str] | None = None,
                 force: set[str] | None = None) -> list[StageOutcome]:
    """Run ``stages`` (all registered ones by default) in DAG order."""
    force = set(force or ())
    selected = _ordered(stages or list(specs))
    not_registered = [s for s in selected if s not in specs]
    if not_registered:
        raise StageError(f"stage(s) {', '.join(not_registered)} are not implemented in this version")
    unknown_force = force - set(selected)
    if unknown_force:
        raise StageError(f"--force {', '.join(sorted(unknown_force))}: not among the stages to run ({', '.join(selected)})")
    store = ArtifactStore(cfg.workdir)
    return [run_stage(specs[name], cfg, store, force=name in force) for name in selected]
