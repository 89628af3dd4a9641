"""Training checkpoints: atomic writes, latest + every K-th retention, RNG capture, clear load errors."""

from __future__ import annotations

import logging
import os
import random
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

log = logging.getLogger("fils.checkpoint")
_NAME = re.compile(r"step_(\d{8})\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or does not belong to the configured model."""


class UnreadableCheckpoint(CheckpointError):
    """The file is not a readable checkpoint (truncated by a kill or a full disk, corrupted, not ours)."""


def capture_rng() -> dict[str, Any]:
    """Every RNG state, as types ``torch.load(weights_only=True)`` accepts (numpy's key array as a tensor)."""
    kind, key, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": {"kind": kind, "key": torch.from_numpy(key.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "gauss": float(gauss)}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    saved = state["numpy"]
    np.random.set_state((saved["kind"], saved["key"].numpy().astype(np.uint32), saved["pos"], saved["has_gauss"],
                         saved["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_checkpoint(path: Path, mmap: bool = False) -> dict[str, Any]:
    """Read a checkpoint file on the CPU, naming the file and the remedy on failure. Only tensors and plain
    containers are read (``weights_only``): a crafted pickle cannot run code here. ``mmap``: tensors stay on disk
    until used (reading the keys, the step or a few tensors of a multi-GB file)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; check the path or start a fresh run")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # corrupted / truncated / not a torch file
        raise UnreadableCheckpoint(f"checkpoint {path} could not be read ({exc}); delete it to resume from an older "
                                   "one") from None


def load_model_state(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Strict ``load_state_dict`` whose error names the file and the mismatching keys."""
    own = model.state_dict()
    missing = sorted(own.keys() - state.keys())
    unexpected = sorted(state.keys() - own.keys())
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}" for k, v in own.items()
              if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        raise CheckpointError(
            f"checkpoint {path} does not match the configured model (missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}, shape mismatches {shapes[:5]}); use the configuration it was trained with "
            "or start a fresh run directory"
        )
    model.load_state_dict(state)


def check_config(saved: dict[str, Any], current: dict[str, Any], path: Path, sections: tuple[str, ...],
                 ignore: tuple[str, ...] = ()) -> None:
    """Refuse to resume when architecture- or loss-defining config sections changed; ``ignore`` names settings
    (``section.key``) in them that only say how the run is computed."""
    for section in sections:
        skip = {name.split(".", 1)[1] for name in ignore if name.startswith(f"{section}.")}
        old = {k: v for k, v in saved.get(section, {}).items() if k not in skip}
        new = {k: v for k, v in current.get(section, {}).items() if k not in skip}
        if old != new:
            diff = {k: (old.get(k), v) for k, v in new.items() if old.get(k) != v}
            raise CheckpointError(
                f"checkpoint {path} was trained with a different '{section}' config (saved vs current: {diff}); "
                "restore those settings or use a new run directory"
            )


class CheckpointManager:
    """``step_XXXXXXXX.pt`` files in one directory; keeps the latest and every ``keep_every``-th save."""

    def __init__(self, directory: Path, checkpoint_every: int, keep_every: int) -> None:
        self.directory = Path(directory)
        self.keep_period = checkpoint_every * keep_every

    def _steps(self) -> list[int]:
        if not self.directory.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.directory.iterdir() if (m := _NAME.search(p.name)))

    def path(self, step: int) -> Path:
        return self.directory / f"step_{step:08d}.pt"

    def saved(self) -> list[Path]:
        """Every kept checkpoint, oldest first."""
        return [self.path(step) for step in self._steps()]

    def latest(self) -> Path | None:
        saved = self.saved()
        return saved[-1] if saved else None

    def resume(self, load: Callable[[Path], None]) -> Path | None:
        """``load`` the newest readable checkpoint (None: there is none yet). An unreadable one is reported and the
        one before it is tried; when none can be read, or on any other error (a checkpoint of another model, say),
        the resume stops with that error instead of silently starting over."""
        unreadable: UnreadableCheckpoint | None = None
        for step in reversed(self._steps()):
            try:
                load(self.path(step))
                return self.path(step)
            except UnreadableCheckpoint as exc:
                log.warning("%s; trying the previous checkpoint", exc)
                unreadable = exc
        if unreadable is not None:
            raise unreadable
        return None

    def save(self, step: int, state: dict[str, Any]) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        target = self.path(step)
        tmp = target.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, target)
        for old in self._steps()[:-1]:
            if old % self.keep_period:
                self.path(old).unlink(missing_ok=True)
        return target
