"""GPU placement of a stage's unit workers: each worker process is pinned to one GPU (``CUDA_VISIBLE_DEVICES``), so a
model loaded once per worker (a captioner) lives on its own device, and the units are spread over every GPU.

A stage says whether a config's units use a GPU (``StageSpec.uses_gpu``); ``runtime.gpus`` names the devices
(``auto``: every visible one) and ``runtime.workers_per_gpu`` how many workers share one.
"""
from __future__ import annotations

import multiprocessing
import os
import threading
from collections import Counter
from typing import Any, Callable, Literal

from pebble import ProcessFuture, ProcessPool

from pipeline.child_process import worker_dies_with_parent


def visible_gpus() -> list[int]:
    """The GPUs this process may use, by the index the driver knows them by: ``CUDA_VISIBLE_DEVICES`` when it
    lists device numbers, else ``0 .. n-1`` for torch's device count."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        entries = [e.strip() for e in listed.split(",") if e.strip()]
        if all(e.isdigit() for e in entries):
            return [int(e) for e in entries]
    import torch

    return list(range(torch.cuda.device_count()))


def resolve_gpus(setting: list[int] | Literal["auto"]) -> list[int]:
    return visible_gpus() if setting == "auto" else list(setting)


def pin_worker(gpu: int) -> None:
    """Initializer of a pinned worker (before it imports torch): it sees one GPU, as ``cuda:0``."""
    os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    worker_dies_with_parent()


class PinnedPools:
    """One pool of ``per_gpu`` spawned worker processes per GPU, each pinned to it; a job goes to the pool with the
    fewest jobs in flight, so units spread over the GPUs as they finish. Schedules like a pebble ``ProcessPool``
    (``pipeline.parallel.run_units`` takes either)."""

    def __init__(self, gpus: list[int], per_gpu: int):
        if not gpus:
            raise ValueError("PinnedPools needs at least one GPU")
        spawn = multiprocessing.get_context("spawn")
        self.pools = {gpu: ProcessPool(max_workers=per_gpu, context=spawn, initializer=pin_worker, initargs=(gpu,))
                      for gpu in gpus}
        self._in_flight: Counter[int] = Counter()
        self._lock = threading.Lock()

    def schedule(self, fn: Callable[..., Any], args: tuple[Any, ...] = (), timeout: float | None = None
                 ) -> ProcessFuture:
        with self._lock:
            gpu = min(self.pools, key=lambda g: (self._in_flight[g], g))
            self._in_flight[gpu] += 1
        future = self.pools[gpu].schedule(fn, args=args, timeout=timeout)
        future.add_done_callback(lambda _: self._done(gpu))
        return future

    def _done(self, gpu: int) -> None:
        with self._lock:
            self._in_flight[gpu] -= 1

    def close(self) -> None:
        for pool in self.pools.values():
            pool.close()

    def join(self) -> None:
        for pool in self.pools.values():
            pool.join()

    def __enter__(self) -> PinnedPools:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
        self.join()
