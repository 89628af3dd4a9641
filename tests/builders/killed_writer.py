"""A cache writer killed by SIGKILL in the middle of writing an entry (``pipeline.sealed_cache``): what it leaves."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers import REPO

_WRITER = """
import sys, time
from pathlib import Path
from pipeline.sealed_cache import seal_folder

def write(staging):
    (staging / "part.bin").write_bytes(b"x" * 1000)
    Path(sys.argv[2]).touch()  # tell the parent we are inside the write
    time.sleep(120)

seal_folder(Path(sys.argv[1]), write)
"""


def writer_inside_seal(entry: Path, marker: Path) -> subprocess.Popen:
    """A process sealing ``entry`` that is inside its write (``marker`` exists) when this returns."""
    child = subprocess.Popen([sys.executable, "-c", _WRITER, str(entry), str(marker)], cwd=REPO)
    deadline = time.monotonic() + 60
    while not marker.exists():
        if child.poll() is not None or time.monotonic() > deadline:
            child.kill()
            raise RuntimeError(f"the writer of {entry} never started its write (exit {child.poll()})")
        time.sleep(0.05)
    return child


def killed_writer(entry: Path) -> Path:
    """SIGKILL a writer of ``entry`` inside its write; returns the staging folder it left."""
    child = writer_inside_seal(entry, entry.parent / f"{entry.name}.writing")
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    (staging,) = entry.parent.glob(f".{entry.name}.tmp-*")
    return staging
