"""Content fingerprints: stable hashes of configs, file identities and files."""
from __future__ import annotations

import fnmatch
import hashlib
import json
from pathlib import Path
from typing import Any


def stable_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def hash_value(value: Any) -> str:
    return hashlib.sha256(stable_json(value).encode()).hexdigest()


def file_identity(path: Path, relative_to: Path | None = None) -> dict[str, Any]:
    """Cheap identity of an input file (make-style): relative path, size and modification time."""
    st = path.stat()
    name = str(path.relative_to(relative_to)) if relative_to is not None else str(path)
    return {"path": name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def path_identity(value: str | Path | None) -> str | None:
    """Cheap identity (names, sizes, mtimes) of a local file or folder named by a setting, so replacing a local
    checkpoint, caption or class file makes the stage that reads it stale; None for what is not a local path (hub
    ids, open_clip tags: pin hub ids with a revision)."""
    if value is None:
        return None
    path = Path(value).expanduser()
    if path.is_file():
        return hash_value(file_identity(path, path.parent))
    if path.is_dir():
        return hash_value([file_identity(p, path) for p in sorted(path.rglob("*")) if p.is_file()])
    return None


def sha256_file(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def is_runtime_only(path: str, runtime_only: tuple[str, ...]) -> bool:
    """Whether the setting at dotted ``path`` is matched by one of the fnmatch patterns ``runtime_only``, itself or
    through a section above it."""
    parts = path.split(".")
    return any(fnmatch.fnmatchcase(".".join(parts[:depth]), pattern)
               for depth in range(1, len(parts) + 1) for pattern in runtime_only)


def without_runtime_only(tree: dict[str, Any], runtime_only: tuple[str, ...], prefix: str) -> dict[str, Any]:
    """``tree`` (a config section dumped to JSON, at dotted path ``prefix``) without its runtime-only settings
    (:func:`is_runtime_only`): what enters a stage's fingerprint."""
    kept: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}.{key}"
        if is_runtime_only(path, runtime_only):
            continue
        kept[key] = without_runtime_only(value, runtime_only, path) if isinstance(value, dict) else value
    return kept
