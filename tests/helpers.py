"""Helpers the tests share (fixtures live in conftest.py): test configs, process markers, stage locks."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from pipeline.samples import SAMPLES_CSV
from stages.config import FilsConfig, load_config

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"


def benchmark_module(name: str) -> ModuleType:
    """A script of benchmarks/ imported by name, as it imports its siblings (``record``); spawned worker
    processes inherit sys.path and find it the same way."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    return importlib.import_module(name)


def make_config(workdir: Path, samples: Path, overrides: list[str] | None = None, **sections: Any) -> FilsConfig:
    """A config over a `fils samples` folder, fast settings for tests; ``sections`` replace whole sections."""
    tree: dict[str, Any] = {
        "workdir": str(workdir),
        "data": {"source": {"kind": "csv", "root": str(samples), "annotations": str(samples / SAMPLES_CSV)}},
        "runtime": {"workers": 2, "progress": False},
        "shard": {"short_side": 96, "window_s": 3.0},
    }
    tree.update(sections)
    return load_config(tree=tree, overrides=overrides)


def marked_processes(mark: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if f"FILS_TEST_MARK={mark}".encode() in environ.split(b"\0") and state != "Z":
            found.append(int(entry.name))
    return found


def wait_until_gone(mark: str, seconds: float = 15) -> list[int]:
    deadline = time.monotonic() + seconds
    while (alive := marked_processes(mark)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return alive


def hold_stage_lock(workdir: Path, stage: str) -> subprocess.Popen:
    """Another process holding ``stage``'s lock, as a running `fils run` does; returns once it holds it."""
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\nfrom pathlib import Path\nfrom pipeline.locks import stage_locks\n"
        "with stage_locks(Path(sys.argv[1]), sys.argv[2]):\n    print('held', flush=True)\n    time.sleep(600)\n"),
        str(workdir), stage], stdout=subprocess.PIPE, text=True,
        env=os.environ | {"PYTHONPATH": str(REPO)})
    assert holder.stdout.readline().strip() == "held"
    return holder


def reseal(workdir: Path, stage: str) -> None:
    """Rewrite a committed output's marker to match its files as they are now: as if the stage had written the
    bytes a test put there (an upstream with undecodable clips, say), so they are not detected as damage."""
    from pipeline.artifacts import SUCCESS_FILE, OutputFile, SuccessRecord
    from pipeline.fingerprint import sha256_file

    root = workdir / stage
    record = SuccessRecord.model_validate_json((root / SUCCESS_FILE).read_text())
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != SUCCESS_FILE)
    record.outputs = [OutputFile(path=str(p.relative_to(root)), size=p.stat().st_size, sha256=sha256_file(p))
                      for p in files]
    (root / SUCCESS_FILE).write_text(record.model_dump_json())
