"""The pipeline stages, one package each (plain Python, no Prefect import): ``stages/<name>/stage.py`` holds the
stage's ``SPEC``, ``config.py`` its config section, ``tables.py`` the tables it publishes to later stages."""
from __future__ import annotations

from importlib import import_module

from pipeline.registry import dag_order
from pipeline.stage import StageSpec
from stages.packages import stage_packages


def registry() -> dict[str, StageSpec]:
    """Name -> spec of every stage package, in DAG order."""
    specs = []
    for name in stage_packages():
        spec = import_module(f"stages.{name}.stage").SPEC
        if spec.name != name:
            raise ValueError(f"stages/{name}/stage.py declares the stage {spec.name!r}; a stage is named by its package")
        specs.append(spec)
    return {spec.name: spec for spec in dag_order(specs)}
