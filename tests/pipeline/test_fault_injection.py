"""`kill -9` of `fils run` at random moments of shard -> optical_flow -> captions (so also inside units, between
stages and inside commits), then a rerun, until a run completes: the outputs are byte-identical to an
uninterrupted run's, no process of a killed run survives it, and a committed stage is never run again.
The kill times are drawn from a seeded generator whose seed is printed."""
from __future__ import annotations

import hashlib
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.artifacts import SUCCESS_FILE
from pipeline.samples import SampleSettings, write_samples
from tests.helpers import REPO, wait_until_gone

STAGES = ("shard", "optical_flow", "captions")
MAX_KILLS = 6


def write_config(path: Path, workdir: Path, samples: Path) -> Path:
    path.write_text(
        f"workdir: {workdir}\n"
        f"data: {{source: {{kind: csv, root: {samples}, annotations: {samples / 'samples.csv'}}}}}\n"
        "runtime: {workers: 2, progress: false}\nshard: {short_side: 64, window_s: 3.0}\n"
        "optical_flow: {clips_per_unit: 2, contact_sheet: {clips: 2}}\ncaptions: {source: narration}\n")
    return path


def digests(workdir: Path) -> dict[str, str]:
    return {str(p.relative_to(workdir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for stage in STAGES for p in sorted((workdir / stage).rglob("*"))
            if p.is_file() and p.name != SUCCESS_FILE}


def start(config: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "stages.cli", "run", "-c", str(config), "--stages",
                             ",".join(STAGES)], cwd=REPO, stdout=subprocess.DEVNULL, stderr=open(log, "w"))


@pytest.mark.skipif(sys.platform != "linux", reason="finds survivors through /proc")
def test_kill_9_of_fils_run_at_random_points_then_rerun(tmp_path, mark):
    samples = tmp_path / "samples"
    write_samples(samples, SampleSettings(clips_per_class=2, frames=24, real=False))
    reference = write_config(tmp_path / "reference.yaml", tmp_path / "reference", samples)
    started = time.monotonic()
    proc = start(reference, tmp_path / "reference.log")
    assert proc.wait(600) == 0, (tmp_path / "reference.log").read_text()
    duration = time.monotonic() - started

    seed = random.randrange(2**32)
    print(f"kill times drawn with seed {seed}; an uninterrupted run takes {duration:.1f} s")
    rng = random.Random(seed)
    config = write_config(tmp_path / "killed.yaml", tmp_path / "killed", samples)
    committed: set[str] = set()
    for attempt in range(MAX_KILLS + 1):
        log = tmp_path / f"attempt-{attempt}.log"
        proc = start(config, log)
        try:
            code = proc.wait(600 if attempt == MAX_KILLS else rng.uniform(1.0, duration))
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            survivors = wait_until_gone(mark)
            assert survivors == [], f"attempt {attempt}: processes of the killed run survive: {survivors}"
            code = None
        text = log.read_text()
        for stage in committed:  # a stage that runs logs its plan ("shard: 13 units, ..."); a committed one is skipped
            assert not re.search(rf"{stage}: \d+ units,", text), f"attempt {attempt} redid {stage}:\n{text}"
        committed |= {s for s in STAGES if f"{s}: committed" in text}
        if code is not None:
            assert code == 0, text
            break
    print(f"{attempt} kill(s), then a complete run")
    assert digests(tmp_path / "killed") == digests(tmp_path / "reference")
    assert wait_until_gone(mark) == []  # the multiprocessing resource tracker exits on its own, just after the run
