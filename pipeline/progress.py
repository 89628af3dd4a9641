"""Progress reporting: a tqdm bar in a terminal, plain log lines (about every 10 %) otherwise."""
from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from typing import Iterator

from tqdm import tqdm

log = logging.getLogger("fils.progress")


class _LogProgress:
    def __init__(self, total: int, desc: str):
        self.total, self.desc, self.done, self._next = total, desc, 0, 0

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.done >= self._next or self.done == self.total:
            log.info("%s: %d/%d", self.desc, self.done, self.total)
            self._next = self.done + max(1, self.total // 10)


@contextmanager
def progress(total: int, desc: str) -> Iterator[tqdm | _LogProgress]:
    if sys.stderr.isatty():
        with tqdm(total=total, desc=desc, unit="unit", leave=False) as bar:
            yield bar
    else:
        yield _LogProgress(total, desc)
