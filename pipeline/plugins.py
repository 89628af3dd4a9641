"""Named implementations of one extension point (flow backends, text encoders, dataset adapters), each imported
only when it is chosen, so one backend's heavy dependencies never load for another.

A registry maps a name to ``"module:attribute"``. Built-in implementations are one entry each, next to the config
setting that chooses among them; an installed package adds its own through a Python entry point of the registry's
group, so it is known in every process of a run (the unit workers are separate processes) without editing this
repository. The config setting takes its choices from the registry (``choices()``).
"""
from __future__ import annotations

from functools import cached_property
from importlib import import_module
from importlib.metadata import entry_points
from typing import Any, Literal, Mapping


class Registry:
    def __init__(self, setting: str, entries: Mapping[str, str], group: str):
        """``setting``: the config key that chooses an entry (named in errors); ``entries``: the built-in
        implementations, name -> ``"module:attribute"``; ``group``: the entry-point group of installed ones."""
        _check_targets(setting, entries)
        self.setting, self.group = setting, group
        self._builtin = dict(entries)

    @cached_property
    def _entries(self) -> dict[str, str]:
        installed = {ep.name: ep.value for ep in entry_points(group=self.group)}
        _check_targets(f"{self.setting} (entry points {self.group})", installed)
        clash = sorted(set(installed) & set(self._builtin))
        if clash:
            raise ValueError(f"{self.setting}: installed entry points of {self.group} reuse built-in names {clash}; "
                             "rename them in the package that declares them")
        return self._builtin | installed

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def choices(self) -> Any:
        """The ``Literal`` of the names, for the config field that chooses an entry."""
        return Literal[self.names()]

    def load(self, name: str) -> Any:
        """The implementation registered as ``name``, imported now."""
        if name not in self._entries:
            raise ValueError(f"{self.setting}={name!r} is unknown; choose from {', '.join(self._entries)}")
        module, attribute = self._entries[name].split(":")
        return getattr(import_module(module), attribute)


def _check_targets(setting: str, entries: Mapping[str, str]) -> None:
    malformed = [target for target in entries.values() if target.count(":") != 1]
    if malformed:
        raise ValueError(f"{setting}: entries must be 'module:attribute', got {malformed}")
