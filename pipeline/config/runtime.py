"""How work is executed: worker processes and per-unit time limits. Never part of a fingerprint,
so changing the worker count never invalidates cached artifacts."""
from pydantic import Field

from pipeline.config.base import Section


class RuntimeConfig(Section):
    workers: int = Field(default=2, ge=0, description="Worker processes per stage; 0 runs inline (debugging).")
    unit_timeout_s: float = Field(
        default=600.0, gt=0, description="A unit of work (one video, one shard) killed after this many seconds."
    )
    progress: bool = Field(default=True, description="Progress bar in a terminal, log lines otherwise.")
