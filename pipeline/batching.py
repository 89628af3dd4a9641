"""Units grouped into batches: what one orchestrated task (a Prefect task run) handles.

A unit stays the unit of work, failure and resume: each is processed under its own time limit and sealed on its
own, so a bad video fails alone and a killed batch redoes only its unsealed units. Batches only bound how many
tasks an orchestrator tracks (a 220k-video dataset is hundreds of task runs, not 220k). They are a runtime
choice: outputs are assembled from the sealed units and never depend on how the units were grouped.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from pipeline.stage import Unit

BATCHES_PER_WORKER = 4  # enough batches that workers stay busy when batch sizes are uneven


@dataclass(frozen=True)
class Batch:
    id: str  # its position, zero-padded: a task run name that sorts
    units: tuple[Unit, ...]


def batch_units(units: list[Unit], max_units: int, max_bytes: int, workers: int) -> list[Batch]:
    """Consecutive runs of ``units`` (order kept), each with at most ``max_units`` units and ``max_bytes`` of input
    (``Unit.size_bytes``; a unit larger than that is a batch of its own). Batches are made smaller when there would
    be fewer than ``BATCHES_PER_WORKER`` per worker, so a small stage still spreads over every worker."""
    if max_units < 1 or max_bytes < 1:
        raise ValueError(f"batch limits must be positive, got max_units={max_units}, max_bytes={max_bytes}")
    per_batch = max(1, min(max_units, math.ceil(len(units) / (BATCHES_PER_WORKER * max(1, workers)))))
    groups: list[list[Unit]] = []
    size = 0
    for unit in units:
        if not groups or len(groups[-1]) >= per_batch or size + unit.size_bytes > max_bytes:
            groups.append([])
            size = 0
        groups[-1].append(unit)
        size += unit.size_bytes
    width = max(5, len(str(len(groups))))
    return [Batch(f"{i:0{width}d}", tuple(group)) for i, group in enumerate(groups)]
