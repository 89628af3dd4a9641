"""The settings the core reads (``workdir``, ``runtime``) and the root config composed from the stages' sections."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from pydantic import Field, create_model

from pipeline.config.base import Section
from pipeline.config.runtime import RuntimeConfig

SectionField = tuple[Any, Any]  # (type, default or pydantic Field), as pydantic's create_model takes them


class CoreConfig(Section):
    workdir: Path = Field(description="Every stage writes its artifacts to <workdir>/<stage>/.")
    runtime: RuntimeConfig = RuntimeConfig()


def root_config(name: str, sections: Mapping[str, SectionField], module: str) -> type[CoreConfig]:
    """The root config class ``name``: ``CoreConfig`` plus one field per stage section (section -> (type, default))."""
    clashes = sorted(set(sections) & set(CoreConfig.model_fields))
    if clashes:
        raise ValueError(f"config section(s) {clashes} are the core's own settings; a stage must name its section "
                         "differently")
    return create_model(name, __base__=CoreConfig, __module__=module, **dict(sections))
