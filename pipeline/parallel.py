"""Run units of work in worker processes with a time limit each.

Native decoders can hang without releasing the GIL, so a thread or signal cannot stop them: each unit runs
in a pebble worker process that is killed when its time is up, and the run goes on with the next unit.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import traceback
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Callable

from pebble import ProcessExpired, ProcessPool

from pipeline.progress import progress

log = logging.getLogger(__name__)

UnitFn = Callable[..., dict[str, Any]]


def _init_worker() -> None:
    # One thread per worker: the parallelism is across workers.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:  # pragma: no cover - cv2 is a dependency
        pass


def run_units(fn: UnitFn, jobs: list[tuple[str, tuple[Any, ...]]], workers: int, timeout_s: float | None,
              desc: str) -> dict[str, str]:
    """Call ``fn(*args)`` for each ``(unit_id, args)``; return ``{unit_id: error}`` for units that failed.

    ``workers == 0`` runs inline (no isolation, no time limit): meant for debugging. ``timeout_s=None``: no limit.
    """
    failures: dict[str, str] = {}
    with progress(len(jobs), desc) as bar:
        if workers == 0:
            for unit_id, args in jobs:
                try:
                    fn(*args)
                except Exception as exc:  # noqa: BLE001 - one bad unit never stops the run
                    failures[unit_id] = f"{type(exc).__name__}: {exc}"
                    log.warning("unit %s failed: %s", unit_id, failures[unit_id])
                bar.update(1)
            return failures
        ctx = multiprocessing.get_context("spawn")
        with ProcessPool(max_workers=workers, initializer=_init_worker, context=ctx) as pool:
            futures = {unit_id: pool.schedule(fn, args=args, timeout=timeout_s) for unit_id, args in jobs}
            for unit_id, future in futures.items():
                try:
                    future.result()
                except FutureTimeout:
                    failures[unit_id] = f"timed out after {timeout_s:.0f} s (worker killed)"
                except ProcessExpired as exc:
                    failures[unit_id] = f"worker process died (exit code {exc.exitcode})"
                except Exception as exc:  # noqa: BLE001
                    failures[unit_id] = f"{type(exc).__name__}: {exc}"
                    log.debug("unit %s traceback:\n%s", unit_id, getattr(exc, "traceback", traceback.format_exc()))
                if unit_id in failures:
                    log.warning("unit %s failed: %s", unit_id, failures[unit_id])
                bar.update(1)
    return failures

