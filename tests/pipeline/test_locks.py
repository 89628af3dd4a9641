"""Two runs on one workdir, as real `fils run` processes: the second gets a clear busy error and changes nothing;
a dead holder's lock is free at once; a stage being read by another run cannot be recommitted."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.artifacts import ArtifactStore
from pipeline.locks import WorkdirBusy, stage_locks
from tests.helpers import REPO, hold_stage_lock


def write_config(path: Path, workdir: Path, samples: Path, short_side: int) -> Path:
    path.write_text(
        f"workdir: {workdir}\n"
        f"data: {{source: {{kind: csv, root: {samples}, annotations: {samples / 'samples.csv'}}}}}\n"
        f"runtime: {{workers: 1, progress: false}}\nshard: {{short_side: {short_side}, window_s: 3.0}}\n")
    return path


def fils(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "stages.cli", *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for_holder(workdir: Path, stage: str) -> None:
    deadline = time.monotonic() + 120
    while not list((workdir / ".locks").glob(f"{stage}.*.json")) and time.monotonic() < deadline:
        time.sleep(0.05)


def staged_units(workdir: Path) -> set[str]:
    return {p.name for p in (workdir / ".staging").glob("shard/*/units/*")}


@pytest.mark.parametrize("second_short_side", [96, 64], ids=["same config", "different config"])
def test_a_second_run_on_the_workdir_is_refused_and_deletes_nothing(tmp_path, samples_dir, second_short_side):
    workdir = tmp_path / "work"
    first_cfg = write_config(tmp_path / "a.yaml", workdir, samples_dir, 96)
    second_cfg = write_config(tmp_path / "b.yaml", workdir, samples_dir, second_short_side)
    first = fils("run", "-c", str(first_cfg), "--stages", "shard")
    wait_for_holder(workdir, "shard")
    first.send_signal(signal.SIGSTOP)  # hold it mid-run (it keeps its lock), whatever the machine's speed
    try:
        units_before = staged_units(workdir)
        second = fils("run", "-c", str(second_cfg), "--stages", "shard")
        _, err = second.communicate(timeout=120)
        assert second.returncode == 75, err
        assert "busy: workdir" in err and "stage shard is held run by" in err and f"pid {first.pid}" in err
        assert staged_units(workdir) >= units_before and ArtifactStore(workdir).success("shard") is None
    finally:
        first.send_signal(signal.SIGCONT)
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    first_record = ArtifactStore(workdir).success("shard")
    assert first_record.row_counts["clips"] > 0
    again = fils("run", "-c", str(second_cfg), "--stages", "shard")
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert ("skipped" in out) == (second_short_side == 96)
    assert not list((workdir / ".locks").glob("*.json"))  # every holder removed its note


def test_a_killed_holder_leaves_no_lock_behind(tmp_path):
    holder = hold_stage_lock(tmp_path, "shard")
    with pytest.raises(WorkdirBusy, match=f"pid {holder.pid}"):
        with stage_locks(tmp_path, "shard"):
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with stage_locks(tmp_path, "shard"):  # the kernel released it; the dead holder's note is not reported
        pass


def test_readers_share_a_stage_and_keep_its_writer_out(tmp_path):
    with stage_locks(tmp_path, "pretrain", ("shard", "captions")):
        with stage_locks(tmp_path, None, ("shard",)):  # a sweep reads the shards while pretrain trains
            pass
        with pytest.raises(WorkdirBusy, match="stage captions is held read by"):
            with stage_locks(tmp_path, "captions", ("shard",)):
                pass
        with pytest.raises(WorkdirBusy, match="stage pretrain is held run by"):
            with stage_locks(tmp_path, None, ("pretrain",)):
                pass
