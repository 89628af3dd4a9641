"""YAML loading, ``--set key.path=value`` overrides and validation errors a person can act on."""
from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import ValidationError

from pipeline.config.base import Section

Config = TypeVar("Config", bound=Section)


class ConfigError(ValueError):
    """The config is invalid; the message names each key, the value given and what was expected."""


def apply_overrides(tree: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides; values are parsed as YAML scalars (``3``, ``true``, ``[a, b]``)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected KEY=VALUE, for example shard.short_side=256")
        dotted, raw = item.split("=", 1)
        keys = [k for k in dotted.strip().split(".") if k]
        if not keys:
            raise ConfigError(f"override {item!r}: empty key")
        node = tree
        for depth, key in enumerate(keys[:-1]):
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                where = ".".join(keys[: depth + 1])
                raise ConfigError(f"override {item!r}: `{where}` holds {child!r}, not a section")
            node = child
        try:
            node[keys[-1]] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({exc})") from exc
    return tree


def _format_errors(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "<root>"
        if err["type"] == "missing":
            lines.append(f"  - `{key}` is required but missing")
        elif err["type"] == "extra_forbidden":
            lines.append(f"  - `{key}` is not a known setting (value {err['input']!r}); check the spelling")
        else:
            lines.append(f"  - `{key}`: got {err['input']!r}; {err['msg']}")
    return "invalid config:\n" + "\n".join(lines)


def validate_config(model: type[Config], tree: dict[str, Any]) -> Config:
    try:
        return model.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc)) from None


def load_config(model: type[Config], path: str | Path | None = None, overrides: list[str] | None = None,
                tree: dict[str, Any] | None = None) -> Config:
    """Load a YAML config (or start from ``tree``), apply overrides and validate it as ``model`` before any work
    starts."""
    data: dict[str, Any] = dict(tree or {})
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist; pass an existing YAML file with -c")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level, got {type(loaded).__name__}")
        data.update(loaded)
    return validate_config(model, apply_overrides(data, list(overrides or [])))
