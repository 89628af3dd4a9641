"""Named implementations of one extension point (flow backends, text encoders, dataset adapters), each imported
only when it is chosen, so one backend's heavy dependencies never load for another.

A registry maps a name to ``"module:attribute"``. Built-in implementations are one entry each, next to the config
setting that chooses among them; an installed package adds its own through a Python entry point of the registry's
group, so it is known in every process of a run (the unit workers are separate processes) without editing this
repository. The config setting takes its choices from the registry (``choices()``).
"""
from __future__ import annotations

import logging
from functools import cached_property, reduce
from importlib import import_module
from importlib.metadata import entry_points
from typing import Any, Literal, Mapping

log = logging.getLogger("fils.plugins")


class Registry:
    def __init__(self, setting: str, entries: Mapping[str, str], group: str):
        """``setting``: the config key that chooses an entry (named in errors); ``entries``: the built-in
        implementations, name -> ``"module:attribute"``; ``group``: the entry-point group of installed ones."""
        _check_targets(setting, entries)
        self.setting, self.group = setting, group
        self._builtin = dict(entries)

    @cached_property
    def _entries(self) -> dict[str, str]:
        """Built-in entries plus the installed ones; an installed entry that is malformed or reuses a built-in
        name is left out with a warning (one broken package must not break every command)."""
        entries = dict(self._builtin)
        for ep in entry_points(group=self.group):
            source = f"entry point {ep.name!r} = {ep.value!r} of {self.group}"
            if ep.name in entries:
                log.warning("%s: %s is ignored, the name is taken; rename it in its package", self.setting, source)
            elif not ep.attr:
                log.warning("%s: %s is ignored, it must name module:attribute", self.setting, source)
            else:
                entries[ep.name] = f"{ep.module}:{ep.attr}"
        return entries

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
        return reduce(getattr, attribute.split("."), import_module(module))


def _check_targets(setting: str, entries: Mapping[str, str]) -> None:
    malformed = [target for target in entries.values() if target.count(":") != 1]
    if malformed:
        raise ValueError(f"{setting}: entries must be 'module:attribute', got {malformed}")
