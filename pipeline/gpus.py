"""GPU placement of a stage's unit workers: each worker process is pinned to one GPU (``CUDA_VISIBLE_DEVICES``), so a
model loaded once per worker (a captioner) lives on its own device, and the units are spread over every GPU.

A stage says whether a config's units use a GPU (``StageSpec.units_on_gpu``); ``runtime.gpus`` names the devices
(``auto``: every visible one) and ``runtime.workers_per_gpu`` how many workers share one.
"""
from __future__ import annotations

import functools
import itertools
import multiprocessing
import os
import tempfile
import threading
import time
from collections import Counter, deque
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

from pebble import ProcessFuture, ProcessPool

from pipeline.child_process import worker_dies_with_parent
from pipeline.locks import try_flock


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as ``CUDA_VISIBLE_DEVICES`` names them (indices, UUIDs or MIG names), else
    ``0 .. n-1`` for torch's device count."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [e.strip() for e in listed.split(",") if e.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def resolve_gpus(setting: list[int | str] | Literal["auto"]) -> list[str]:
    return visible_gpus() if setting == "auto" else [str(g) for g in setting]


def pin_worker(gpu: str) -> None:
    """Initializer of a pinned worker (before it imports torch): it sees one GPU, as ``cuda:0``."""
    os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    worker_dies_with_parent()


class PinnedPools:
    """One pool of ``per_gpu`` spawned worker processes per GPU, each pinned to it. Jobs wait in one queue and go to
    a GPU when one of its workers is free, so units spread over the GPUs as they finish (a slow GPU is not handed a
    fixed share). Schedules like a pebble ``ProcessPool`` (``pipeline.parallel.run_units`` takes either); a job's
    future raises what the pebble future raised (a time-out, a dead worker)."""

    def __init__(self, gpus: list[str], per_gpu: int):
        if not gpus:
            raise ValueError("PinnedPools needs at least one GPU")
        spawn = multiprocessing.get_context("spawn")
        self.per_gpu = per_gpu
        self.pools = {gpu: ProcessPool(max_workers=per_gpu, context=spawn, initializer=pin_worker, initargs=(gpu,))
                      for gpu in gpus}
        self._in_flight: Counter[str] = Counter()
        self._waiting: deque[tuple[Callable[..., Any], tuple[Any, ...], float | None, Future]] = deque()
        self._lock = threading.RLock()  # a done callback may run at once, inside _dispatch

    def schedule(self, fn: Callable[..., Any], args: tuple[Any, ...] = (), timeout: float | None = None) -> Future:
        job: Future = Future()
        with self._lock:
            self._waiting.append((fn, args, timeout, job))
            self._dispatch()
        return job

    def _dispatch(self) -> None:
        with self._lock:
            while self._waiting:
                free = [gpu for gpu in self.pools if self._in_flight[gpu] < self.per_gpu]
                if not free:
                    return
                gpu = min(free, key=lambda g: self._in_flight[g])
                fn, args, timeout, job = self._waiting.popleft()
                self._in_flight[gpu] += 1
                running = self.pools[gpu].schedule(fn, args=args, timeout=timeout)
                running.add_done_callback(functools.partial(self._finished, gpu, job))

    def _finished(self, gpu: str, job: Future, running: ProcessFuture) -> None:
        try:
            job.set_result(running.result())
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller as it is
            job.set_exception(exc)
        with self._lock:
            self._in_flight[gpu] -= 1
            self._dispatch()

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


@contextmanager
def claim_gpu(gpus: list[str], per_gpu: int, poll_s: float = 0.5) -> Iterator[str]:
    """One of ``per_gpu`` slots of one of ``gpus`` on this node, held until the block ends: the GPU of a batch that
    runs in a process of its own (Prefect's process and Dask runners), so concurrent batches never put more than
    ``per_gpu`` workers on a GPU. The slots are ``flock``s on node-local files, freed by the kernel when the holder
    dies."""
    folder = Path(tempfile.gettempdir()) / "fils-gpu-slots"
    folder.mkdir(exist_ok=True)
    while True:
        for slot, gpu in itertools.product(range(per_gpu), gpus):
            fd = try_flock(folder / f"{gpu.replace('/', '_')}-{slot}.lock")
            if fd is None:
                continue
            try:
                yield gpu
            finally:
                os.close(fd)
            return
        time.sleep(poll_s)
