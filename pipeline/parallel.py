"""Run units of work in worker processes with a time limit each.

Native decoders can hang without releasing the GIL, so a thread or signal cannot stop them: each unit runs
in a pebble worker process that is killed when its time is up, and the run goes on with the next unit.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import traceback
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from pebble import ProcessExpired, ProcessPool

from pipeline.child_process import worker_dies_with_parent
from pipeline.errors import StageError
from pipeline.progress import progress

log = logging.getLogger(__name__)

UnitFn = Callable[..., dict[str, Any]]


_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@contextmanager
def single_threaded() -> Iterator[None]:
    """Run a unit with one compute thread, whatever process it lands in (pebble, Prefect process pool, Dask
    worker, or inline): parallelism is across units, and float reductions then give the same bits in every
    mode, so outputs do not depend on the runner. Thread settings are restored afterwards."""
    import cv2

    saved_env = {var: os.environ.get(var) for var in _THREAD_VARS}
    saved_cv2 = cv2.getNumThreads()
    torch = sys.modules.get("torch")
    saved_torch = torch.get_num_threads() if torch is not None else None
    for var in _THREAD_VARS:
        os.environ[var] = "1"
    cv2.setNumThreads(1)
    if torch is not None:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        for var, value in saved_env.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value
        cv2.setNumThreads(saved_cv2)
        torch = sys.modules.get("torch")
        if torch is not None:
            torch.set_num_threads(saved_torch or os.cpu_count() or 1)


def isolated_pool(workers: int) -> ProcessPool:
    """Spawned worker processes that can be killed when a unit runs out of time (units set their own
    thread count: ``single_threaded``), and that die with the process that runs the stage."""
    return ProcessPool(max_workers=workers, context=multiprocessing.get_context("spawn"),
                       initializer=worker_dies_with_parent)


@dataclass(frozen=True)
class UnitFailure:
    reason: str
    retryable: bool  # False when the unit said the stage cannot go on (StageError): a retry would fail alike


def _failure(exc: BaseException, timeout_s: float | None) -> UnitFailure:
    return UnitFailure(_describe(exc, timeout_s), not isinstance(exc, StageError))


def _describe(exc: BaseException, timeout_s: float | None) -> str:
    if isinstance(exc, FutureTimeout):
        return f"timed out after {timeout_s:.0f} s (worker killed)"
    if isinstance(exc, ProcessExpired):
        return f"worker process died (exit code {exc.exitcode})"
    return f"{type(exc).__name__}: {exc}"


def run_units(fn: UnitFn, jobs: list[tuple[str, tuple[Any, ...]]], workers: int, timeout_s: float | None,
              desc: str, pool: Any = None) -> dict[str, UnitFailure]:
    """Call ``fn(*args)`` for each ``(unit_id, args)``; return the failures of the units that failed.

    Units run in ``pool`` (a pebble ``ProcessPool`` or ``pipeline.gpus.PinnedPools``; else a pool of ``workers``
    processes made for the call); ``workers == 0`` runs them inline (no isolation, no time limit): meant for
    debugging. ``timeout_s=None``: no limit.
    """
    failures: dict[str, UnitFailure] = {}
    with progress(len(jobs), desc) as bar:
        if workers == 0 and pool is None:
            for unit_id, args in jobs:
                try:
                    fn(*args)
                except Exception as exc:  # noqa: BLE001 - the caller decides what a failed unit means
                    failures[unit_id] = _failure(exc, timeout_s)
                    log.warning("unit %s failed: %s", unit_id, failures[unit_id].reason)
                bar.update(1)
            return failures
        own_pool = pool is None
        pool = pool or isolated_pool(workers)
        try:
            futures = {unit_id: pool.schedule(fn, args=args, timeout=timeout_s) for unit_id, args in jobs}
            for unit_id, future in futures.items():
                try:
                    future.result()
                except Exception as exc:  # noqa: BLE001
                    failures[unit_id] = _failure(exc, timeout_s)
                    log.warning("unit %s failed: %s", unit_id, failures[unit_id].reason)
                    log.debug("traceback:\n%s", getattr(exc, "traceback", traceback.format_exc()))
                bar.update(1)
        finally:
            if own_pool:
                pool.close()
                pool.join()
    return failures


def loader_context(workers: int) -> str | None:
    """Start DataLoader workers from a fork server: forking a process whose OpenMP pool is already running
    (torch after any parallel op) can deadlock the child in its first OpenMP call."""
    return "forkserver" if workers > 0 else None
