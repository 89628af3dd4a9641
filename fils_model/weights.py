"""A saved model folder (the Hugging Face layout): its weights file and the fingerprint that identifies it.

Every saved model of the pipeline (an exported encoder, a fine-tuned classifier) is a folder holding
``model.safetensors`` next to its config; a path to the weights file itself is accepted wherever a folder is."""
from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

WEIGHTS_NAME = "model.safetensors"


def weights_file(path: Path) -> Path:
    """The weights of a model folder (its ``model.safetensors``), or ``path`` itself when it is a file."""
    path = Path(path)
    return path / WEIGHTS_NAME if path.is_dir() else path


def weights_fingerprint(path: Path) -> str:
    """16 hex digits of the sha256 of the weights: the identity of a checkpoint in results and fingerprints."""
    weights = weights_file(path)
    if not weights.is_file():
        raise FileNotFoundError(f"checkpoint weights {weights} not found; check the path")
    stat = weights.stat()
    return _digest(str(weights.resolve()), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=64)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    """Hash a weights file once per version of it (size and mtime key the cache): a sweep, the bank and the results
    rows all ask for the fingerprint of the same multi-GB checkpoint."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()[:16]
