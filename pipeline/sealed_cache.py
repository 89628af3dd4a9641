"""Write-once cache entries outside any stage output (caption caches, the feature bank): a folder is written under a
staging name next to its final name and sealed by one rename, so a reader sees a whole entry or none, and two
writers of the same entry cannot mix their files (the first rename wins; the other's staging is removed).

A writer killed before its rename leaves its staging folder behind. Each staging folder holds an owner file (host,
boot, PID namespace, pid) until just before the rename; :func:`reap_staging` removes the staging of writers that are
provably gone: same host, boot and PID namespace and the pid no longer running, or same host and an earlier boot. A
folder written from another host (a shared file system) or another container is never touched, unless the caller
holds a lock that excludes every writer (``all_gone``). A write that raises removes its own staging.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import uuid
from collections.abc import Callable
from pathlib import Path

from pipeline.artifacts import fsync_dir, fsync_tree

OWNER_FILE = ".owner.json"
STAGING_MARK = ".tmp-"


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _owner() -> dict[str, object]:
    return {"host": socket.gethostname(), "boot": _boot_id(), "pid_namespace": _pid_namespace(), "pid": os.getpid()}


def seal_folder(entry: Path, write: Callable[[Path], None]) -> bool:
    """Run ``write(staging)`` on a fresh staging folder, flush it and rename it to ``entry``; False when another
    writer sealed ``entry`` first (its content is then what readers get)."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    staging = entry.with_name(f".{entry.name}{STAGING_MARK}{uuid.uuid4().hex[:12]}")
    staging.mkdir()
    (staging / OWNER_FILE).write_text(json.dumps(_owner()))
    try:
        write(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    (staging / OWNER_FILE).unlink()
    fsync_tree(staging)
    try:
        os.rename(staging, entry)
    except OSError:
        if not entry.is_dir():
            raise
        shutil.rmtree(staging)  # our own staging: the entry another writer sealed stays
        return False
    fsync_dir(entry.parent)
    return True


def _writer_gone(owner: dict[str, object]) -> bool:
    me = _owner()
    if owner.get("host") != me["host"]:
        return False
    if owner.get("boot") != me["boot"]:
        return True
    if owner.get("pid_namespace") != me["pid_namespace"]:
        return False  # another container on this host: its pids are not ours to look up
    try:
        os.kill(int(owner["pid"]), 0)  # type: ignore[arg-type]
    except ProcessLookupError:
        return True
    except (PermissionError, KeyError, TypeError, ValueError):
        return False
    return False


def reap_staging(folder: Path, all_gone: bool = False) -> list[Path]:
    """Remove the staging folders in ``folder`` whose writer is gone (see the module docstring); with
    ``all_gone`` (the caller holds a lock that excludes every writer) all of them. Returns them."""
    reaped = []
    for staging in folder.glob(f".*{STAGING_MARK}*") if folder.is_dir() else ():
        try:
            owner = json.loads((staging / OWNER_FILE).read_text())
        except (OSError, ValueError):
            owner = None  # no owner file: being renamed now, or written before owner files existed
        if all_gone or (isinstance(owner, dict) and _writer_gone(owner)):
            shutil.rmtree(staging, ignore_errors=True)
            reaped.append(staging)
    return reaped
