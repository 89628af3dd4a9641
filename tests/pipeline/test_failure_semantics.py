"""Failures of the machine are not bad samples: a full disk (a file-size limit makes writes fail the same way)
or a unit time-out fails the stage, commits nothing and records no reject; the rerun finishes the work and gives
the bytes of an undisturbed run. Real `fils run` processes."""
from __future__ import annotations

import hashlib
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.artifacts import SUCCESS_FILE
from stages.shard.tables import REJECTS_FILE
from tests.helpers import REPO


def write_config(path: Path, workdir: Path, samples: Path) -> Path:
    path.write_text(
        f"workdir: {workdir}\n"
        f"data: {{source: {{kind: csv, root: {samples}, annotations: {samples / 'samples.csv'}}}}}\n"
        "runtime: {workers: 2, progress: false, unit_retries: 1}\nshard: {short_side: 96, window_s: 3.0}\n")
    return path


def digests(stage_dir: Path) -> dict[str, str]:
    return {str(p.relative_to(stage_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(stage_dir.rglob("*")) if p.is_file() and p.name != SUCCESS_FILE}


def fils_run(config: Path, *args: str, file_size_limit: int | None = None) -> subprocess.CompletedProcess:
    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    return subprocess.run([sys.executable, "-m", "stages.cli", "run", "-c", str(config), "--stages", "shard", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=600,
                          preexec_fn=limit if file_size_limit else None)


@pytest.mark.parametrize("limit, message", [
    (20_000, "unit(s) failed"),  # the real clips' units cannot write their clips; the generated ones can
    (60_000, "writing the outputs failed"),  # every unit fits; the shard tar does not
], ids=["in units", "in the commit"])
def test_a_full_disk_fails_the_stage_and_the_rerun_completes_it(tmp_path, samples_dir, sharded, limit, message):
    config = write_config(tmp_path / "c.yaml", tmp_path / "work", samples_dir)
    failed = fils_run(config, file_size_limit=limit)
    assert failed.returncode == 2, failed.stderr
    assert message in failed.stderr and "File too large" in failed.stderr and "are kept" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert not (tmp_path / "work" / "shard").exists()  # nothing committed: no reject rows for healthy videos
    finished = list((tmp_path / "work" / ".staging").glob("shard/*/units/*"))
    assert 0 < len(finished) <= 13
    done = fils_run(config)
    assert done.returncode == 0, done.stderr
    assert f"{len(finished)} already done" in done.stderr
    assert digests(tmp_path / "work" / "shard") == digests(sharded.workdir / "shard")


def test_a_unit_time_out_fails_the_stage_instead_of_rejecting_the_video(tmp_path, few_samples):
    config = write_config(tmp_path / "c.yaml", tmp_path / "work", few_samples)
    # The pool checks time limits every ~0.1 s, so a unit must take longer than that to be caught: x264's slowest
    # preset makes each ~1 s (with the default preset a fast machine sometimes finished one before the check).
    failed = fils_run(config, "--set", "runtime.unit_timeout_s=0.05", "--set", "shard.preset=placebo")
    assert failed.returncode == 2
    assert "timed out after" in failed.stderr and "retrying" in failed.stderr
    assert not (tmp_path / "work" / "shard").exists()
    assert fils_run(config).returncode == 0
    reasons = pq.read_table(tmp_path / "work" / "shard" / REJECTS_FILE).column("reason").to_pylist()
    assert not any("timed out" in r for r in reasons)


@pytest.fixture(autouse=True)
def _linux_only():
    if sys.platform != "linux":
        pytest.skip("RLIMIT_FSIZE semantics: Linux")
