"""GPU slots shared by every flow run: a stage that uses N GPUs holds N slots of the Prefect global concurrency
limit ``runtime.gpu_slots`` (default ``fils-gpu``) while it runs, so two flow runs scheduled onto one node (captions
and pre-training, say) wait for each other instead of oversubscribing its GPUs. Slots are leases that Prefect
renews while the run lives and that expire when it dies. Create the limit with as many slots as the node (or pool)
has GPUs; without it nothing is waited for."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from prefect import get_run_logger
from prefect.concurrency.sync import concurrency

from stages.config import FilsConfig


@contextmanager
def gpu_slots(cfg: FilsConfig, stage: str, gpus: int) -> Iterator[None]:
    if gpus == 0 or cfg.runtime.gpu_slots is None:
        yield
        return
    get_run_logger().info("%s: waiting for %d slot(s) of the concurrency limit %r", stage, gpus, cfg.runtime.gpu_slots)
    with concurrency(cfg.runtime.gpu_slots, occupy=gpus, strict=False):
        get_run_logger().info("%s: holding %d GPU slot(s)", stage, gpus)
        yield
