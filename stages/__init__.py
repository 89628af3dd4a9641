"""The pipeline stages, one module each (plain Python, no Prefect import), and their registry."""
from __future__ import annotations

from importlib import import_module

from pipeline.stage import StageSpec

_MODULES = {"shard": "stages.shard", "optical_flow": "stages.optical_flow", "captions": "stages.captions",
            "pretrain": "stages.pretrain", "finetune": "stages.finetune", "evaluate": "stages.evaluate"}


def registry() -> dict[str, StageSpec]:
    """Name -> spec of every implemented stage, in DAG order."""
    return {name: import_module(module).SPEC for name, module in _MODULES.items()}
