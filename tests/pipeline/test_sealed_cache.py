"""Write-once cache entries (pipeline/sealed_cache.py): a writer SIGKILLed inside its write leaves no entry and a
staging folder that the next run reaps; a live writer's staging and another host's are left alone; the first of
two writers of one entry wins."""
import json
import os
import signal

from pipeline.sealed_cache import OWNER_FILE, reap_staging, seal_folder
from tests.builders.killed_writer import killed_writer, writer_inside_seal


def test_a_killed_writer_leaves_no_entry_and_its_staging_is_reaped(tmp_path):
    entry = tmp_path / "cache" / "entry"
    staging = killed_writer(entry)
    assert not entry.exists() and (staging / "part.bin").is_file() and (staging / OWNER_FILE).is_file()
    assert reap_staging(entry.parent) == [staging] and not staging.exists()
    assert seal_folder(entry, lambda folder: (folder / "data").write_text("whole"))
    assert (entry / "data").read_text() == "whole" and not (entry / OWNER_FILE).exists()
    assert sorted(p.name for p in entry.parent.iterdir()) == ["entry", "entry.writing"]


def test_a_live_writer_and_another_hosts_staging_are_left_alone(tmp_path):
    entry = tmp_path / "cache" / "entry"
    child = writer_inside_seal(entry, tmp_path / "writing")
    try:
        (staging,) = entry.parent.glob(".entry.tmp-*")
        assert reap_staging(entry.parent) == [] and staging.is_dir()
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    foreign = entry.parent / ".other.tmp-0001"
    foreign.mkdir()
    (foreign / OWNER_FILE).write_text(json.dumps({"host": "another-host", "boot": "x", "pid": 1}))
    assert reap_staging(entry.parent) == [staging] and foreign.is_dir()


def test_a_failed_write_removes_its_staging_and_a_lock_holder_reaps_everything(tmp_path):
    entry = tmp_path / "cache" / "entry"

    def fail(folder):
        (folder / "half").write_text("x")
        raise OSError("disk full")

    try:
        seal_folder(entry, fail)
    except OSError:
        pass
    assert list(entry.parent.iterdir()) == []
    foreign = entry.parent / ".other.tmp-0001"
    foreign.mkdir()
    (foreign / OWNER_FILE).write_text(json.dumps({"host": "another-host", "boot": "x", "pid": 1}))
    legacy = entry.parent / ".old.tmp-abcd1234"  # written before owner files existed
    legacy.mkdir()
    assert reap_staging(entry.parent) == []
    assert sorted(reap_staging(entry.parent, all_gone=True)) == sorted([foreign, legacy])


def test_the_first_of_two_writers_wins(tmp_path):
    entry = tmp_path / "entry"
    assert seal_folder(entry, lambda folder: (folder / "data").write_text("first"))
    assert not seal_folder(entry, lambda folder: (folder / "data").write_text("second"))
    assert (entry / "data").read_text() == "first" and list(tmp_path.iterdir()) == [entry]
