"""Prefect calls that only report (artifacts, progress bars) are best effort: a server outage must never fail a
stage or hold up its commit. The Prefect client retries an unreachable API for about a minute per call, so a
report is skipped at once when the server's health check fails, and a report that fails anyway is logged and
dropped."""
from __future__ import annotations

import logging
from typing import Any, Callable, Generic, TypeVar

from prefect.settings import get_current_settings

from flows.local_server import api_healthy

log = logging.getLogger("fils.flows")
T = TypeVar("T")


def api_url() -> str | None:
    url = get_current_settings().api.url
    return str(url) if url else None


def api_reachable() -> bool:
    """True unless a configured API fails its health check (no URL: an ephemeral in-process API, always up)."""
    url = api_url()
    return url is None or api_healthy(url)


def best_effort(what: str, call: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
    """``call(*args, **kwargs)``, or None (logged) when the API is down or the call fails."""
    if not api_reachable():
        log.warning("Prefect API %s is unreachable: %s not published (the stage goes on; `fils status` shows "
                    "its outputs)", api_url(), what)
        return None
    try:
        return call(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - any failure of a report must leave the stage alone
        log.warning("Prefect API call failed: %s not published (%s: %s)", what, type(exc).__name__, exc)
        return None


class FinishedDespiteOutage(Generic[T]):
    """Keeps a subflow's value outside Prefect. Prefect records a subflow's final state after its function
    returned; when the API fails just then, the call raises although the work is done (a stage committed, every
    unit ran). ``call`` then returns the kept value instead of failing work that is finished."""

    def __init__(self, name: str):
        self.name = name
        self.value: T | None = None
        self.finished = False

    def keep(self, value: T) -> T:
        """The subflow function's last statement: ``return kept.keep(value)``."""
        self.value, self.finished = value, True
        return value

    def call(self, subflow: Callable[[], T]) -> T:
        try:
            return subflow()
        except Exception as exc:
            if not self.finished:
                raise
            log.warning("Prefect could not record the end of %s (%s: %s); its work is done and kept", self.name,
                        type(exc).__name__, exc)
            return self.value  # type: ignore[return-value]
