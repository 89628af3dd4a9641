"""The root config: the core's settings (``workdir``, ``runtime``) plus the sections every stage package declares
in its ``config.py`` (``SECTIONS``). Only ``workdir`` and ``data.source`` are required."""
from __future__ import annotations

from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.config import CoreConfig, root_config
from pipeline.config import load_config as load_config_as
from pipeline.config.root import SectionField
from stages.packages import stage_packages


def _sections() -> dict[str, SectionField]:
    sections: dict[str, SectionField] = {}
    for name in stage_packages():
        for section, field in import_module(f"stages.{name}.config").SECTIONS.items():
            if section in sections:
                raise ValueError(f"config section {section!r} is declared by two stages (one is {name!r})")
            sections[section] = field
    return sections


if TYPE_CHECKING:
    FilsConfig = CoreConfig
else:
    FilsConfig = root_config("FilsConfig", _sections(), __name__)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                tree: dict[str, Any] | None = None) -> FilsConfig:
    """Load and validate a FILS config file (see ``pipeline.config.load_config``)."""
    return load_config_as(FilsConfig, path, overrides, tree)
