"""Named implementations of one extension point (flow backends, text encoders, dataset adapters), each imported
only when it is chosen, so one backend's heavy dependencies never load for another.

A registry maps a name to ``"module:attribute"``; the config setting that chooses among them takes its choices
from the registry (``choices()``), so adding an implementation is one entry next to the code that implements it.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any, Literal, Mapping


class Registry:
    def __init__(self, setting: str, entries: Mapping[str, str]):
        """``setting``: the config key that chooses an entry (named in errors); ``entries``: name ->
        ``"module:attribute"``."""
        malformed = [target for target in entries.values() if target.count(":") != 1]
        if malformed:
            raise ValueError(f"{setting}: entries must be 'module:attribute', got {malformed}")
        self.setting = setting
        self._entries = dict(entries)

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
