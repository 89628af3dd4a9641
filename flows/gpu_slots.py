"""GPU slots shared by every flow run: a stage that uses N GPUs holds N slots of the Prefect global concurrency
limit ``runtime.gpu_slots`` (default ``fils-gpu``) while it runs, so two flow runs scheduled onto one node (captions
and pre-training, say) wait for each other instead of oversubscribing its GPUs. Slots are leases that Prefect
renews while the run lives and that expire when it dies. A limit is server-wide: give each node (or pool of
identical nodes) its own, with as many slots as it has GPUs; without one nothing is waited for (a warning says so)."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectNotFound

from stages.config import FilsConfig


@contextmanager
def gpu_slots(cfg: FilsConfig, stage: str, gpus: int) -> Iterator[None]:
    name = cfg.runtime.gpu_slots
    if gpus == 0 or name is None:
        yield
        return
    size = _limit_size(name)
    if size is None:
        get_run_logger().warning("%s: the Prefect server has no concurrency limit %r, so this run's %d GPU(s) are not "
                                 "coordinated with other flow runs; create it with the node's GPU count: prefect gcl "
                                 "create %s --limit N", stage, name, gpus, name)
        yield
        return
    occupy = min(gpus, size)  # asking for more slots than the limit has fails instead of waiting
    if occupy < gpus:
        get_run_logger().warning("%s uses %d GPUs, the concurrency limit %r has %d slots: it holds all of them",
                                 stage, gpus, name, size)
    get_run_logger().info("%s: waiting for %d slot(s) of the concurrency limit %r", stage, occupy, name)
    with concurrency(name, occupy=occupy, strict=True):
        get_run_logger().info("%s: holding %d GPU slot(s)", stage, occupy)
        yield


def _limit_size(name: str) -> int | None:
    with get_client(sync_client=True) as client:
        try:
            return client.read_global_concurrency_limit_by_name(name).limit
        except ObjectNotFound:
            return None
