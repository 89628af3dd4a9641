"""The one Prefect flow, `fils`: runs the selected stages in DAG order through the artifact store.

Every deployment (`fils/full-pipeline`, `fils/captions`, `fils/nightly-eval`, ...) is this flow with other
default parameters. Each stage is a subflow; a stage's units (one per video or shard) are grouped into batches
(``runtime.batch_max_units``, ``runtime.batch_max_mb``: one task run each) mapped over the configured task runner;
each unit is retried and sealed on its own, and a unit that still fails fails the stage (nothing committed,
finished units kept), with the reasons in the flow run's state message.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

from pebble import ProcessPool
from prefect import flow, get_run_logger, task, unmapped
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.logging.handlers import APILogHandler

from flows.artifacts import publish_stage_artifacts, publish_sweep_artifacts
from flows.gpu_slots import gpu_slots
from flows.reporting import FinishedDespiteOutage, api_reachable, api_url, best_effort
from flows.runners import make_task_runner
from pipeline.artifacts import ArtifactStore, unit_done
from pipeline.batching import Batch, batch_units
from pipeline.child_process import stop_when_parent_dies
from pipeline.gpus import PinnedPools, claim_gpu
from pipeline.locks import stage_locks
from pipeline.runner import (
    PreparedStage,
    StageError,
    StageOutcome,
    complete_stage,
    gpus_used,
    ordered_stages,
    prepare_stage,
    run_units_with_retries,
    unit_gpus,
    unit_pool,
    unit_workers,
)
from pipeline.stage import StageContext, Unit
from stages import registry
from stages.config import FilsConfig, load_config
from stages.packages import stage_packages

StageName = Literal[tuple(stage_packages())]  # the stage packages (not imported here), so the UI offers exactly these
WORKER_RUN_ENV = "PREFECT__FLOW_RUN_ID"  # set by Prefect workers and runners for the flow-run process
OUR_LOGGERS = ("fils", "pipeline", "stages", "fils_model")
# Time-limited worker processes shared by the thread-runner tasks of a running stage (spawning a process
# per unit would cost more than most units).
_ISOLATION_POOLS: dict[str, ProcessPool] = {}


@contextmanager
def _forward_logs() -> Iterator[None]:
    """Send our library loggers to the Prefect run while the flow runs (and only then: outside a flow run
    the handler has nowhere to send them)."""
    handler = APILogHandler()
    loggers = [logging.getLogger(name) for name in OUR_LOGGERS]
    for logger in loggers:
        logger.setLevel(logging.INFO)
        logger.addHandler(handler)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


@task(name="batch", task_run_name="{stage}:batch-{batch.id}", cache_policy=NO_CACHE)
def run_batch(stage: str, process: Callable[[StageContext, Unit, Path], dict[str, Any]], ctx: StageContext,
              batch: Batch, timeout_s: float | None, gpus: list[str] | None = None, per_gpu: int = 1
              ) -> dict[str, str]:
    """Run one batch of a stage's units; return those that still failed after their retries, with the reason.
    Each unit is sealed on its own, so a retried batch redoes only its unsealed units. A timed unit runs in a
    worker process that is killed when its time is up (native decoders can hang where a thread cannot stop them),
    under every task runner: the stage's shared pool under the thread runner; under the process and Dask runners a
    process of this batch's own (a pool kept in their workers would keep them from exiting), pinned to a free slot
    of one of ``gpus`` on this node when the units need a GPU."""
    shared = _ISOLATION_POOLS.get(stage)
    if timeout_s is not None and shared is None and multiprocessing.current_process().daemon:
        raise StageError("this task runner's worker is a daemonic process, which cannot start the time-limited "
                         "process a unit runs in: start the Dask workers with DASK_DISTRIBUTED__WORKER__DAEMON=False "
                         "in their environment, or use runtime.task_runner=process")
    todo = [u for u in batch.units if not unit_done(ctx.units_dir, u.id)]

    def run(pool: ProcessPool | PinnedPools | None) -> dict[str, str]:
        failures = run_units_with_retries(process, ctx, todo, workers=0 if timeout_s is None else 1,
                                          timeout_s=timeout_s, pool=pool, desc=f"{stage}:batch-{batch.id}")
        return {unit: failure.reason for unit, failure in failures.items()}

    if shared is not None or timeout_s is None or not gpus:
        return run(shared)
    with claim_gpu(gpus, per_gpu) as gpu, PinnedPools([gpu], 1) as own:
        return run(own)


@contextmanager
def dask_resources(resources: dict[str, int] | None) -> Iterator[None]:
    """Tasks submitted inside ask Dask for ``resources`` (its scheduler runs them only on workers that have them)."""
    if not resources:
        yield
        return
    import dask

    with dask.annotate(resources=resources):
        yield


def _retryable(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect's retry condition: a StageError says a retry would fail alike."""
    return not isinstance(state.result(raise_on_failure=False), StageError)


def fan_out_units(prepared: PreparedStage) -> dict[str, str]:
    cfg, name = prepared.cfg, prepared.spec.name
    workers = unit_workers(prepared.spec, cfg)
    batches = batch_units(prepared.pending, cfg.runtime.batch_max_units, int(cfg.runtime.batch_max_mb * 2**20),
                          workers)
    # Retries of a batch whose task itself failed (its units retry inside it); a retry redoes only unsealed units.
    batch_task = run_batch.with_options(retries=cfg.runtime.unit_retries, retry_delay_seconds=[2, 10, 30],
                                        retry_condition_fn=_retryable)
    gpus = unit_gpus(prepared.spec, cfg)
    dask_resource = cfg.runtime.dask_gpu_resource if gpus and cfg.runtime.task_runner == "dask" else None
    # Process/Dask batches claim a free GPU slot of their node, unless Dask places them on workers owning one.
    batch_gpus = gpus if gpus and dask_resource is None else None

    kept: FinishedDespiteOutage[dict[str, str]] = FinishedDespiteOutage(f"the {name} units")

    @flow(name=f"{name}-units", task_runner=make_task_runner(cfg, workers))
    def fan_out() -> dict[str, str]:
        progress = best_effort("the progress bar", create_progress_artifact, progress=0.0,
                               key=f"fils-{name.replace('_', '-')}-progress", description=f"{name}: units done")
        with dask_resources({dask_resource: 1} if dask_resource else None):
            futures = batch_task.map(name, prepared.spec.process, prepared.ctx, batches, prepared.unit_timeout_s,
                                     unmapped(batch_gpus), cfg.runtime.workers_per_gpu)
        failures: dict[str, str] = {}
        done = shown = 0
        for batch, future in zip(batches, futures):
            future.wait()
            if not future.state.is_completed():  # failed, crashed or cancelled
                reason = future.state.message or "failed"
                failures |= {u.id: reason for u in batch.units if not unit_done(prepared.ctx.units_dir, u.id)}
            else:
                failures |= future.result()
            done += len(batch.units)
            percent = 100 * done // len(prepared.pending)
            if progress is not None and percent > shown:  # at most 100 updates, however many units
                best_effort("the progress bar", update_progress_artifact, progress, float(percent))
                shown = percent
        return kept.keep(failures)

    if not prepared.pending:
        return {}
    get_run_logger().info("%s: %d unit(s) in %d task(s)", name, len(prepared.pending), len(batches))
    if cfg.runtime.task_runner != "thread" or prepared.unit_timeout_s is None:
        return kept.call(fan_out)  # process/Dask workers are processes already; untimed units stream logs
    with unit_pool(prepared.spec, cfg) as pool:
        _ISOLATION_POOLS[name] = pool
        try:
            return kept.call(fan_out)
        finally:
            del _ISOLATION_POOLS[name]


def run_stage_in_flow(name: str, cfg: FilsConfig, force: bool) -> StageOutcome:
    spec = registry()[name]
    kept: FinishedDespiteOutage[StageOutcome] = FinishedDespiteOutage(f"stage {name}")

    @flow(name=f"stage-{name.replace('_', '-')}")
    def stage_flow() -> StageOutcome:
        logger = get_run_logger()
        with stage_locks(cfg.workdir, name, spec.upstream_for(cfg)):
            prepared = prepare_stage(spec, cfg, ArtifactStore(cfg.workdir, registry()), force)
            if isinstance(prepared, StageOutcome):
                logger.info("%s is up to date (fingerprint %s): skipped", name, prepared.record.fingerprint[:12])
                outcome = prepared
            else:
                with gpu_slots(cfg, name, gpus_used(spec, cfg)):
                    outcome = complete_stage(prepared, fan_out_units(prepared))
                logger.info("%s ran: %s", name, outcome.record.row_counts)
        best_effort(f"the {name} artifacts", publish_stage_artifacts, outcome, cfg.workdir)
        return kept.keep(outcome)

    return kept.call(stage_flow)


def resolve_config(config_path: str | None, config: FilsConfig | None, overrides: list[str]) -> FilsConfig:
    if config is not None:
        return load_config(tree=config.model_dump(mode="json"), overrides=overrides)
    if not config_path:
        raise StageError("give either config_path (a YAML file) or config")
    return load_config(Path(config_path), overrides)


@flow(name="fils", log_prints=True)
def fils(config_path: str | None = "configs/demo.yaml", stages: list[StageName] | None = None,
         overrides: list[str] | None = None, force: bool = False, force_stages: list[StageName] | None = None,
         config: FilsConfig | None = None, sweep: bool = False) -> dict[str, str]:
    """Run FILS stages. ``stages`` defaults to every implemented stage; ``force`` recomputes all selected
    stages, ``force_stages`` only those named; ``config`` (a full config tree) replaces ``config_path``;
    ``sweep`` runs the nightly evaluation sweep over every checkpoint not yet evaluated."""
    if os.environ.get(WORKER_RUN_ENV):
        stop_when_parent_dies()  # a worker killed with -9 must not leave its run behind, holding the stage locks
    with _forward_logs():
        actions = _run_fils(resolve_config(config_path, config, list(overrides or [])), stages, force,
                            force_stages, sweep)
    if not api_reachable():
        get_run_logger().warning("the Prefect API %s is unreachable, so this run may show as running there; its "
                                 "work is done: %s", api_url(), actions)
    return actions


def _run_fils(cfg: FilsConfig, stages: list[StageName] | None, force: bool, force_stages: list[StageName] | None,
              sweep: bool) -> dict[str, str]:
    specs = registry()
    if sweep:
        from stages.evaluate.sweep import MetricDropped, run_sweep

        result = run_sweep(cfg, None)
        best_effort("the sweep artifacts", publish_sweep_artifacts, result)
        if result.failed:
            get_run_logger().warning("sweep: %d checkpoint(s) failed: %s", len(result.failed), result.failed)
        if result.drops:  # after everything is recorded and published: the run's failed state is the alert
            raise MetricDropped("; ".join(result.drops))
        return {"evaluated": str(len(result.evaluated)), "skipped": str(len(result.skipped)),
                "failed": str(len(result.failed))}
    selected = ordered_stages(specs, list(stages) if stages else list(specs))
    forced = set(selected) if force else set(force_stages or [])
    actions: dict[str, str] = {}
    for name in selected:
        try:
            actions[name] = run_stage_in_flow(name, cfg, name in forced).action
        except Exception as exc:
            if not api_reachable():
                raise StageError(_outage_message(name, actions, exc)) from exc
            raise StageError(f"stage {name} failed: {exc}") from exc
    return actions


def _outage_message(name: str, actions: dict[str, str], exc: Exception) -> str:
    finished = ", ".join(f"{stage} {action}" for stage, action in actions.items()) or "none"
    return (f"the Prefect API {api_url()} failed during stage {name} ({type(exc).__name__}: {exc}). Stages "
            f"committed: {finished}; run the flow again once the server is back: committed stages are skipped and "
            "finished units are kept")


