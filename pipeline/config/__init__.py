"""Typed config (pydantic v2) loaded from YAML with ``--set a.b=value`` overrides: the sections' base, the core's
own settings and the composition of a root config from the stages' sections."""
from pipeline.config.base import Section
from pipeline.config.loader import ConfigError, apply_overrides, load_config
from pipeline.config.root import CoreConfig, root_config

__all__ = ["ConfigError", "CoreConfig", "Section", "apply_overrides", "load_config", "root_config"]
