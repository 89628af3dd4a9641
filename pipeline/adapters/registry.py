"""Dispatch from ``data.source.kind`` to its adapter, and keep only the configured splits."""
from __future__ import annotations

from dataclasses import replace
from importlib import import_module

from pipeline.adapters.base import AdapterResult
from pipeline.config.data import SourceConfig

ADAPTERS = {"folder": "folder", "csv": "csv_list", "ek100": "ek100", "ssv2": "ssv2",
            "charades_ego": "charades_ego", "egtea": "egtea"}


def list_clips(source: SourceConfig) -> AdapterResult:
    module = import_module(f"pipeline.adapters.{ADAPTERS[source.kind]}")
    result: AdapterResult = module.list_clips(source)
    if source.splits is not None:
        result = replace(result, clips=[c for c in result.clips if c.split in source.splits])
    return result
