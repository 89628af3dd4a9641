"""How work is executed: worker processes and per-unit time limits. Never part of a fingerprint,
so changing the worker count never invalidates cached artifacts."""
from typing import Literal

from pydantic import Field, field_validator

from pipeline.config.base import Section


class RuntimeConfig(Section):
    workers: int = Field(default=2, ge=0, description="Worker processes per stage; 0 runs inline (debugging).")
    unit_timeout_s: float = Field(
        default=600.0, gt=0, description="A unit of work (one video, one shard) killed after this many seconds."
    )
    progress: bool = Field(default=True, description="Progress bar in a terminal, log lines otherwise.")
    task_runner: Literal["thread", "process", "dask"] = Field(
        default="thread",
        description="Prefect task runner for per-unit fan-out: threads (each unit still in its own time-limited "
        "process), a process pool, or Dask (prefect-dask) at `dask_address` or on a local cluster.",
    )
    dask_address: str | None = Field(default=None, description="Dask scheduler, e.g. tcp://10.0.0.5:8786.")
    unit_retries: int = Field(
        default=2, ge=0, le=10, description="Retries of a unit that failed (time-out, dead worker, I/O error); a "
        "unit that still fails fails the stage, with the finished units kept.",
    )
    batch_max_units: int = Field(
        default=500, ge=1, description="Most units (videos, shards) one Prefect task runs. Each unit keeps its own "
        "time limit, retries and seal, so a bad video still fails alone; batching only bounds the task runs a stage "
        "makes (hundreds for a 220k-video dataset). Fewer per batch when a stage has under 4 batches per worker.",
    )
    batch_max_mb: float = Field(
        default=1024.0, gt=0, description="Most input (MB of source video) one Prefect task runs; a larger unit "
        "is a task of its own.",
    )
    gpus: list[int | str] | Literal["auto"] = Field(
        default="auto", description="GPUs for the units of a stage that uses one (captions with VideoBLIP): `auto` "
        "every visible GPU (as CUDA_VISIBLE_DEVICES lists them), or a list of device indices or UUIDs (e.g. [0, 1]); "
        "each unit worker is pinned to one of them (CUDA_VISIBLE_DEVICES) and loads its model once. With no GPU, "
        "`runtime.workers` CPU workers.",
    )
    workers_per_gpu: int = Field(default=1, ge=1, description="Unit workers sharing one GPU (each holds a model).")
    dask_gpu_resource: str | None = Field(
        default=None, description="Under the Dask runner: the worker resource a batch of GPU units asks one of (e.g. "
        "`GPU`, for workers started one per GPU with `--resources GPU=1`, as dask-cuda does); the batch then runs on "
        "such a worker's own device. None: each batch claims a free slot of one of `runtime.gpus` on its node.",
    )
    gpu_slots: str | None = Field(
        default="fils-gpu", description="Prefect global concurrency limit whose slots a stage holds, one per GPU it "
        "uses, so flow runs sharing a node never oversubscribe its GPUs. A limit is server-wide: name one per node "
        "or pool (`fils-gpu-node3`) with that node's GPU count as its size (`prefect gcl create NAME --limit N`). "
        "A missing limit is not waited for; `null`: no slots.",
    )

    @field_validator("gpus")
    @classmethod
    def _distinct_gpus(cls, gpus: list[int | str] | str) -> list[int | str] | str:
        if isinstance(gpus, list) and len({str(g) for g in gpus}) != len(gpus):
            raise ValueError(f"runtime.gpus lists a GPU twice: {gpus}; use runtime.workers_per_gpu for more workers on one")
        return gpus
