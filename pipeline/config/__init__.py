"""The typed config tree (pydantic v2), loaded from YAML with ``--set a.b=value`` overrides."""
from pipeline.config.loader import ConfigError, apply_overrides, load_config, validate_config
from pipeline.config.schema import FilsConfig

__all__ = ["ConfigError", "FilsConfig", "apply_overrides", "load_config", "validate_config"]
