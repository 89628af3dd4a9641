"""Stage locks: two runs on one workdir never work on the same stage, and never replace an output another run
is reading.

A run of stage S holds S's lock exclusively and its upstream stages' locks shared, from planning to commit, so
two runs of S (same or different configs, CLI or Prefect) exclude each other, and S cannot be recommitted while a
downstream stage reads it; runs that only read (a sweep, two downstream stages) go on side by side. Locks are
``flock`` locks on ``<workdir>/.locks/<stage>.lock``: the kernel releases them when the holder dies, however it
dies, so a stale lock is never in the way. Each holder leaves a note (command, pid, host, start time) for the
"busy" message of the run it keeps out.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path

LOCKS_DIR = ".locks"


class WorkdirBusy(RuntimeError):
    """Another run holds a lock this run needs."""


def _holders(folder: Path, stage: str) -> list[dict]:
    notes = []
    for note in sorted(folder.glob(f"{stage}.*.json")):
        with suppress(OSError, ValueError):
            holder = json.loads(note.read_text())
            if holder["host"] != socket.gethostname() or _alive(holder["pid"]):
                notes.append(holder)
    return notes


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _busy_message(folder: Path, stage: str, exclusive: bool) -> str:
    holders = _holders(folder, stage)
    who = "; ".join(f"{h['mode']} by `{h['command']}` (pid {h['pid']} on {h['host']}) since {h['since']}"
                    for h in holders) or "by a run that left no note"
    wanted = "run" if exclusive else "read"
    return (f"workdir {folder.parent} is busy: stage {stage} is held {who}. This run needs to {wanted} it; wait "
            f"for that run to finish or stop it, then run again (nothing was changed)")


def try_flock(path: Path, exclusive: bool = True) -> int | None:
    """Open ``path`` (created if missing) and take its ``flock`` without waiting: the open descriptor, which holds
    the lock until it is closed (or its process dies), or None when another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


@contextmanager
def _lock(folder: Path, stage: str, exclusive: bool) -> Iterator[None]:
    fd = try_flock(folder / f"{stage}.lock", exclusive)
    if fd is None:
        raise WorkdirBusy(_busy_message(folder, stage, exclusive))
    try:
        note = folder / f"{stage}.{socket.gethostname()}-{os.getpid()}-{'ex' if exclusive else 'sh'}.json"
        note.write_text(json.dumps({"mode": "run" if exclusive else "read", "pid": os.getpid(),
                                    "host": socket.gethostname(), "command": " ".join(sys.argv) or "python",
                                    "since": time.strftime("%Y-%m-%d %H:%M:%S")}))
        try:
            yield
        finally:
            note.unlink(missing_ok=True)
    finally:
        os.close(fd)  # releases the lock


@contextmanager
def stage_locks(workdir: Path, runs: str | None, reads: Iterable[str] = ()) -> Iterator[None]:
    """Hold ``runs`` exclusively and ``reads`` shared, or raise ``WorkdirBusy`` at once (never waits)."""
    folder = Path(workdir) / LOCKS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        if runs is not None:
            stack.enter_context(_lock(folder, runs, exclusive=True))
        for stage in reads:
            stack.enter_context(_lock(folder, stage, exclusive=False))
        yield
