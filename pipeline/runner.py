"""Plan and run stages through the artifact store: skip what is done, resume what was interrupted,
recompute what is stale or forced. Both the CLI and the Prefect flows call this module."""
from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Mapping

from pebble import ProcessPool

from pipeline.artifacts import ArtifactStore, StageRun, SuccessRecord, new_unit_tmp, seal_unit, stage_fingerprint
from pipeline.config import ConfigError, CoreConfig
from pipeline.errors import ENVIRONMENT_ERRORS, StageError
from pipeline.gpus import PinnedPools, resolve_gpus
from pipeline.locks import stage_locks
from pipeline.parallel import UnitFailure, isolated_pool, run_units, single_threaded
from pipeline.stage import StageContext, StageSpec, Unit

log = logging.getLogger("fils.runner")

State = Literal["done", "stale", "corrupt", "missing"]


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


def ordered_stages(specs: Mapping[str, StageSpec], names: list[str] | tuple[str, ...]) -> list[str]:
    """``names`` in the order of ``specs`` (the registry's DAG order)."""
    unknown = [n for n in names if n not in specs]
    if unknown:
        raise StageError(f"unknown stage(s) {', '.join(unknown)}; stages are {', '.join(specs)}")
    return [n for n in specs if n in names]


def committed_upstream(spec: StageSpec, cfg: CoreConfig, store: ArtifactStore) -> dict[str, SuccessRecord | None]:
    """The markers of the upstream outputs this config reads (None for one not committed)."""
    return {name: store.success(name) for name in spec.upstream_for(cfg)}


def current_fingerprint(spec: StageSpec, cfg: CoreConfig, records: Mapping[str, SuccessRecord | None]
                        ) -> tuple[str | None, dict[str, str], str | None]:
    """Fingerprint from the config and the upstream ``records`` (None when an upstream is missing)."""
    if any(record is None for record in records.values()):
        return None, {}, None
    upstream = {name: record.output_id for name, record in records.items()}  # type: ignore[union-attr]
    digest = spec.inputs_digest(cfg) if spec.inputs_digest else None
    return stage_fingerprint(spec.name, spec.version, spec.config_of(cfg), upstream, digest), upstream, digest


def pipeline_status(specs: Mapping[str, StageSpec], cfg: CoreConfig, store: ArtifactStore,
                    checksums: bool = False) -> list[StageStatus]:
    """Each stage's state. Committed files are always checked against the sizes in their marker, and with
    ``checksums`` against their sha256 too: a stage whose files do not match is ``corrupt``."""
    statuses: dict[str, StageStatus] = {}
    for name in specs:
        spec = specs[name]
        record = store.success(name)
        try:
            records = committed_upstream(spec, cfg, store)
            fingerprint, _, _ = current_fingerprint(spec, cfg, records)
        except (ConfigError, StageError) as exc:  # e.g. a stage whose config section is absent
            statuses[name] = StageStatus(name, "stale" if record else "missing", None,
                                         record.fingerprint if record else None,
                                         dict(record.row_counts) if record else {}, f"not configured: {exc}")
            continue
        bad_upstream = [u for u in records if u not in statuses or statuses[u].state != "done"]
        problems = store.verify(name, record, checksums) if record is not None else []
        if record is None:
            state, reason = "missing", "never run" if not bad_upstream else f"needs {', '.join(bad_upstream)}"
        elif problems:
            state, reason = "corrupt", "; ".join(problems[:3]) + (f" (+{len(problems) - 3} more)" if len(problems) > 3 else "")
        elif bad_upstream:
            state, reason = "stale", f"upstream {', '.join(bad_upstream)} not up to date"
        elif record.fingerprint != fingerprint:
            state, reason = "stale", changed_since(record, spec, cfg, records)
        else:
            state, reason = "done", ""
        statuses[name] = StageStatus(name, state, fingerprint, record.fingerprint if record else None,
                                     dict(record.row_counts) if record else {}, reason)
    return list(statuses.values())


def changed_keys(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted names of the settings that differ between two config trees."""
    keys = []
    for key in sorted(old.keys() | new.keys()):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += changed_keys(a, b, f"{prefix}{key}.")
        elif a != b:
            keys.append(f"{prefix}{key}")
    return keys


def changed_since(record: SuccessRecord, spec: StageSpec, cfg: CoreConfig,
                  upstream: Mapping[str, SuccessRecord | None]) -> str:
    """Why a committed output is stale, naming what changed; ``upstream``: the markers of the stages it reads."""
    reasons = []
    if record.stage_version != spec.version:
        reasons.append(f"stage version {record.stage_version} -> {spec.version}")
    changed = changed_keys(record.config, spec.config_of(cfg))
    if changed:
        reasons.append(f"settings {', '.join(changed[:5])}" + (f" (+{len(changed) - 5} more)" if len(changed) > 5 else ""))
    rerun = [u for u, up in upstream.items() if up and record.upstream.get(u) != up.output_id]
    if rerun:
        reasons.append(f"new output of {', '.join(rerun)}")
    if spec.inputs_digest and record.inputs_digest != spec.inputs_digest(cfg):
        reasons.append("input files")
    return "changed: " + "; ".join(reasons) if reasons else "fingerprint changed"


def verified_output(store: ArtifactStore, stage: str, reader: str, record: SuccessRecord | None = None,
                    rerun: tuple[str, ...] = ()) -> Path:
    """The committed output folder of ``stage`` for ``reader`` to read, its files checked against their marker
    (sizes); a clear error naming the stages to (re)run when it is missing or corrupt."""
    command = f"`fils run -c CONFIG --stages {','.join(rerun or (stage,))}`"
    record = record or store.success(stage)
    if record is None:
        raise StageError(f"{reader} needs the output of {stage}; run {command} first")
    problems = store.verify(stage, record)
    if problems:
        raise StageError(f"upstream {stage} is corrupt ({'; '.join(problems[:3])}); rebuild it first: {command}")
    return store.workdir / stage


@dataclass
class PreparedStage:
    """A stage about to run: its fingerprint, staging area, context and the units still to do."""

    spec: StageSpec
    cfg: CoreConfig
    fingerprint: str
    upstream: dict[str, str]
    inputs_digest: str | None
    run: StageRun
    ctx: StageContext
    units: list[Unit]
    pending: list[Unit]
    started: float

    @property
    def unit_timeout_s(self) -> float | None:
        return self.spec.unit_timeout_s(self.cfg) if self.spec.unit_timeout_s else self.cfg.runtime.unit_timeout_s


def prepare_stage(spec: StageSpec, cfg: CoreConfig, store: ArtifactStore,
                  force: bool = False) -> PreparedStage | StageOutcome:
    """Return the skip outcome when the stage is up to date, else everything needed to run it."""
    records = committed_upstream(spec, cfg, store)
    fingerprint, upstream, digest = current_fingerprint(spec, cfg, records)
    if fingerprint is None:
        missing = [u for u, record in records.items() if record is None]
        reasons = spec.upstream_reasons(cfg)
        why = "".join(f" ({reasons[u]})" for u in missing if reasons[u])
        raise StageError(f"stage {spec.name!r} needs the output of {', '.join(missing)}{why}; "
                         f"run `fils run -c CONFIG --stages {','.join([*missing, spec.name])}` first")
    for name, record in records.items():
        verified_output(store, name, f"stage {spec.name!r}", record, rerun=(name, spec.name))
    existing = store.success(spec.name)
    if not force and existing is not None and existing.fingerprint == fingerprint:
        problems = store.verify(spec.name, existing)
        if not problems:
            log.info("%s: up to date (fingerprint %s), skipped", spec.name, fingerprint[:12])
            return StageOutcome(spec.name, "skipped", existing)
        log.warning("%s: committed output is corrupt (%s); rebuilding it", spec.name, "; ".join(problems[:3]))
    started = time.time()
    run = store.open_run(spec.name, fingerprint, fresh=force)
    ctx = StageContext(cfg=cfg, stage=spec.name, workdir=store.workdir,
                       upstream=records,  # type: ignore[arg-type]
                       output_dir=run.output_dir, units_dir=run.units_dir)
    units = spec.plan(ctx)
    pending = [u for u in units if not run.unit_done(u.id)]
    log.info("%s: %d units, %d already done, %d to run", spec.name, len(units), len(units) - len(pending), len(pending))
    return PreparedStage(spec, cfg, fingerprint, upstream, digest, run, ctx, units, pending, started)


def execute_unit(process: Callable[[StageContext, Unit, Path], dict[str, Any]], ctx: StageContext,
                 unit: Unit) -> dict[str, Any]:
    """Run one unit into a fresh folder and seal it; module-level so any worker (process, thread, Dask) can
    run it. A unit that raises leaves nothing behind, so it is simply redone next time."""
    tmp = new_unit_tmp(ctx.units_dir, unit.id)
    try:
        with single_threaded():
            summary = process(ctx, unit, tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    seal_unit(ctx.units_dir, unit.id, tmp, summary)
    return summary


def complete_stage(prepared: PreparedStage, failures: dict[str, str]) -> StageOutcome:
    """Assemble the sealed units into the stage's outputs and commit them; with units that failed (after their
    retries) the stage fails instead and commits nothing: a time-out, a dead worker or a full disk is not a bad
    sample (bad samples are recorded by the units themselves), and the next run redoes only those units."""
    spec, cfg = prepared.spec, prepared.cfg
    if failures:
        shown = "\n".join(f"  {unit}: {reason}" for unit, reason in sorted(failures.items())[:10])
        more = f"\n  ... and {len(failures) - 10} more" if len(failures) > 10 else ""
        raise StageError(f"{spec.name}: {len(failures)} of {len(prepared.units)} unit(s) failed:\n{shown}{more}\n"
                         f"the {len(prepared.units) - len(failures)} finished unit(s) are kept; fix the cause (see "
                         f"the reasons) and run again to redo only the failed ones")
    processed = time.time()
    try:
        result = spec.finalize(prepared.ctx, prepared.units)
        record = prepared.run.commit(
            stage_version=spec.version, config=spec.config_of(cfg), upstream=prepared.upstream,
            inputs_digest=prepared.inputs_digest, row_counts=result.row_counts,
            timings={"process_s": round(processed - prepared.started, 3),
                     "finalize_s": round(time.time() - processed, 3), "total_s": round(time.time() - prepared.started, 3),
                     "units": len(prepared.units), "units_run": len(prepared.pending)},
            extra=result.extra, log_files=spec.log_files,
        )
    except ENVIRONMENT_ERRORS as exc:
        raise StageError(f"{spec.name}: writing the outputs failed ({type(exc).__name__}: {exc}); nothing was "
                         f"committed and the {len(prepared.units)} finished unit(s) are kept: free space (or fix "
                         f"the cause) and run again") from exc
    log.info("%s: committed %s (%s)", spec.name, record.output_id,
             ", ".join(f"{k}={v}" for k, v in record.row_counts.items()))
    return StageOutcome(spec.name, "ran", record)


def run_units_with_retries(process: Callable[[StageContext, Unit, Path], dict[str, Any]], ctx: StageContext,
                           units: list[Unit] | tuple[Unit, ...], *, workers: int, timeout_s: float | None,
                           pool: ProcessPool | PinnedPools | None = None, desc: str | None = None
                           ) -> dict[str, UnitFailure]:
    """Run ``units``, each sealed on its own under the time limit ``timeout_s``, retrying the failed ones
    ``runtime.unit_retries`` times; return the failures left. Used for all pending units of a stage (CLI) and for
    one batch of them (a Prefect task): a failing unit never stops the others."""
    retries = ctx.cfg.runtime.unit_retries
    by_id = {u.id: u for u in units}
    todo = list(by_id)
    failures: dict[str, UnitFailure] = {}
    for attempt in range(retries + 1):
        if attempt:
            log.warning("%s: retrying %d failed unit(s) (retry %d of %d)", ctx.stage, len(todo), attempt, retries)
        again = run_units(execute_unit, [(u, (process, ctx, by_id[u])) for u in todo], workers=workers,
                          timeout_s=timeout_s, desc=desc or ctx.stage, pool=pool)
        failures = {u: f for u, f in failures.items() if u not in todo} | again
        todo = [u for u, failure in again.items() if failure.retryable]
        if not todo:
            break
    return failures


def unit_gpus(spec: StageSpec, cfg: CoreConfig) -> list[str]:
    """The GPUs a stage's unit workers are pinned to (each worker one of them; empty: CPU workers). Inline runs
    (``runtime.workers: 0``, for debugging) are never pinned."""
    if spec.units_on_gpu is None or cfg.runtime.workers == 0 or not spec.units_on_gpu(cfg):
        return []
    return resolve_gpus(cfg.runtime.gpus)


def gpus_used(spec: StageSpec, cfg: CoreConfig) -> int:
    """GPUs a run of ``spec`` occupies: its pinned unit workers' GPUs, or what the stage holds itself."""
    pinned = unit_gpus(spec, cfg)
    return len(pinned) if pinned else (spec.gpus_held(cfg) if spec.gpus_held is not None else 0)


def unit_workers(spec: StageSpec, cfg: CoreConfig) -> int:
    """How many unit workers a stage runs at once: ``runtime.workers_per_gpu`` per pinned GPU, else
    ``runtime.workers``."""
    gpus = unit_gpus(spec, cfg)
    return len(gpus) * cfg.runtime.workers_per_gpu if gpus else cfg.runtime.workers


def unit_pool(spec: StageSpec, cfg: CoreConfig) -> ProcessPool | PinnedPools:
    """The worker processes a stage's units run in: pinned to the GPUs when its units need one."""
    gpus = unit_gpus(spec, cfg)
    return PinnedPools(gpus, cfg.runtime.workers_per_gpu) if gpus else isolated_pool(max(1, cfg.runtime.workers))


def run_stage(spec: StageSpec, cfg: CoreConfig, store: ArtifactStore, force: bool = False) -> StageOutcome:
    """Run a stage with local worker processes (each unit under a time limit), holding its locks."""
    with stage_locks(store.workdir, spec.name, spec.upstream_for(cfg)):
        prepared = prepare_stage(spec, cfg, store, force)
        if isinstance(prepared, StageOutcome):
            return prepared
        if cfg.runtime.workers == 0:
            failures = run_units_with_retries(spec.process, prepared.ctx, prepared.pending, workers=0,
                                              timeout_s=prepared.unit_timeout_s)
        else:
            with unit_pool(spec, cfg) as pool:
                failures = run_units_with_retries(spec.process, prepared.ctx, prepared.pending, workers=1,
                                                  timeout_s=prepared.unit_timeout_s, pool=pool)
        return complete_stage(prepared, {u: f.reason for u, f in failures.items()})


def run_pipeline(specs: Mapping[str, StageSpec], cfg: CoreConfig, stages: list[str] | None = None,
                 force: set[str] | None = None) -> list[StageOutcome]:
    """Run ``stages`` (all registered ones by default) in DAG order."""
    force = set(force or ())
    selected = ordered_stages(specs, stages or list(specs))
    unknown_force = force - set(selected)
    if unknown_force:
        raise StageError(f"--force {', '.join(sorted(unknown_force))}: not among the stages to run ({', '.join(selected)})")
    store = ArtifactStore(cfg.workdir, specs)
    return [run_stage(specs[name], cfg, store, force=name in force) for name in selected]
