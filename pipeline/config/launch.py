"""How a training stage starts its training process(es): one process or `torchrun`, threads, watchdogs (not
part of any fingerprint). The launcher that reads it: ``pipeline.launch``."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from pipeline.config.base import Section


class LaunchConfig(Section):
    """How the training process(es) are started (not part of the fingerprint)."""

    nproc_per_node: int | Literal["auto"] = Field(
        default="auto", description="Training processes: `auto` = one per visible GPU (1 on CPU). More than one, "
        "or any GPU, launches `python -m torch.distributed.run`.",
    )
    threads: int = Field(default=0, ge=0, description="torch CPU threads per process (0: torch's default).")
    timeout_s: float | None = Field(
        default=None, gt=0, description="Wall-clock limit of one attempt (the unit is killed; rerun resumes); "
        "None: no limit (runtime.unit_timeout_s does not apply to training).",
    )
    torchrun_args: list[str] = Field(
        default=[], description="Extra `torch.distributed.run` arguments (e.g. --nnodes, --rdzv-endpoint).",
    )
    stall_timeout_s: float | None = Field(
        default=1800, gt=0, description="Kill the training processes and fail the attempt when their log has not "
        "grown for this long (a hung collective or decoder); the rerun resumes. None: no watchdog.",
    )
