"""The Prefect task runner that fans a stage's units out, chosen by ``runtime.task_runner``."""
from __future__ import annotations

from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner, ThreadPoolTaskRunner

from stages.config import FilsConfig


def make_task_runner(cfg: FilsConfig, workers: int) -> TaskRunner:
    """``workers`` tasks at a time (the stage's unit workers: ``runtime.workers``, or one per pinned GPU slot)."""
    workers = max(1, workers)
    if cfg.runtime.task_runner == "thread":
        return ThreadPoolTaskRunner(max_workers=workers)
    if cfg.runtime.task_runner == "process":
        return ProcessPoolTaskRunner(max_workers=workers)
    try:
        import dask
        from prefect_dask import DaskTaskRunner
    except ImportError as exc:  # pragma: no cover - installed with the `dask` extra
        raise RuntimeError("runtime.task_runner=dask needs prefect-dask: pip install 'fils[dask]'") from exc
    if cfg.runtime.dask_address:
        return DaskTaskRunner(address=cfg.runtime.dask_address)
    # A unit with a time limit runs in a child process of the Dask worker (flows.fils_flow.run_unit), which a
    # daemonic worker may not have; workers of your own cluster need the same setting (docs/cache.md).
    dask.config.set({"distributed.worker.daemon": False})
    return DaskTaskRunner(cluster_class="distributed.LocalCluster",
                          cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True})
