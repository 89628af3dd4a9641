import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.artifacts import SUCCESS_FILE, UNIT_FILE, ArtifactStore, new_unit_tmp, seal_unit, stage_fingerprint
from stages import registry
from tests.helpers import REPO


def _commit(store, stage, fingerprint, content=b"x", upstream=None):
    run = store.open_run(stage, fingerprint)
    (run.output_dir / "out.bin").write_bytes(content)
    return run.commit(stage_version="1", config={}, upstream=upstream or {}, inputs_digest=None,
                      row_counts={"rows": 1}, timings={})


def test_commit_swaps_output_in_with_success_last(tmp_path):
    store = ArtifactStore(tmp_path)
    record = _commit(store, "shard", "f" * 64, b"first")
    marker = json.loads((tmp_path / "shard" / SUCCESS_FILE).read_text())
    assert marker["fingerprint"] == "f" * 64 and marker["output_id"] == record.output_id
    assert marker["outputs"] == [{"path": "out.bin", "size": 5,
                                  "sha256": "a7937b64b8caa58f03721bb6bacf5c78cb235febe0e70b1b84cd99541461a08e"}]
    second = _commit(store, "shard", "f" * 64, b"second")
    assert (tmp_path / "shard" / "out.bin").read_bytes() == b"second"
    assert second.output_id != record.output_id  # a recomputed output is a new upstream for later stages
    assert not (tmp_path / ".staging" / "shard").exists() and not (tmp_path / ".trash").exists()


def test_sealed_units_survive_and_unsealed_are_dropped(tmp_path):
    store = ArtifactStore(tmp_path)
    run = store.open_run("captions", "a" * 64)
    tmp = new_unit_tmp(run.units_dir, "u1")
    (tmp / "part").write_text("1")
    seal_unit(run.units_dir, "u1", tmp, {"rows": 1})
    half = new_unit_tmp(run.units_dir, "u2")  # a worker killed before sealing
    (half / "part").write_text("partial")
    resumed = store.open_run("captions", "a" * 64)
    assert resumed.unit_done("u1") and json.loads((resumed.units_dir / "u1" / UNIT_FILE).read_text()) == {"rows": 1}
    assert not resumed.unit_done("u2") and not list(resumed.units_dir.glob(".*"))
    assert not (tmp_path / "captions").exists()  # nothing visible before commit
    other = store.open_run("captions", "b" * 64)  # another fingerprint: its own staging
    assert not other.unit_done("u1")
    assert store.open_run("captions", "b" * 64, fresh=True).units_dir.is_dir()


def test_other_configurations_partial_work_is_never_deleted(tmp_path):
    """A run with another (or a mistaken) config, a forced run and a commit leave the partial work of other
    fingerprints alone: it may be a training run's checkpoints that the other config resumes."""
    store = ArtifactStore(tmp_path)
    run = store.open_run("pretrain", "a" * 64)
    checkpoint = run.root / "train" / "checkpoints" / "step_00001000.pt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"43 MB of training")
    store.open_run("pretrain", "b" * 64, fresh=True)
    _commit(store, "pretrain", "c" * 64)
    assert checkpoint.read_bytes() == b"43 MB of training"
    assert store.open_run("pretrain", "a" * 64).root == checkpoint.parents[2]


def test_fingerprint_depends_on_config_upstream_and_inputs():
    base = stage_fingerprint("captions", "1", {"a": 1}, {"shard": "x"}, None)
    assert base == stage_fingerprint("captions", "1", {"a": 1}, {"shard": "x"}, None)
    assert base != stage_fingerprint("captions", "1", {"a": 2}, {"shard": "x"}, None)
    assert base != stage_fingerprint("captions", "1", {"a": 1}, {"shard": "y"}, None)
    assert base != stage_fingerprint("captions", "2", {"a": 1}, {"shard": "x"}, None)
    assert base != stage_fingerprint("captions", "1", {"a": 1}, {"shard": "x"}, "inputs")


def test_unreadable_marker_counts_as_missing_and_unknown_stage_is_refused(tmp_path):
    store = ArtifactStore(tmp_path, registry())
    (tmp_path / "shard").mkdir()
    (tmp_path / "shard" / SUCCESS_FILE).write_text("{not json")
    assert store.success("shard") is None
    with pytest.raises(ValueError, match="unknown stage"):
        store.stage_dir("shards")


def test_output_id_is_derived_from_the_content(tmp_path):
    """The same bytes give the same id (downstream stays up to date), whatever fingerprint or time made them."""
    store = ArtifactStore(tmp_path)
    first = _commit(store, "shard", "a" * 64, b"same")
    assert _commit(store, "shard", "b" * 64, b"same").output_id == first.output_id
    assert _commit(store, "shard", "b" * 64, b"other").output_id != first.output_id


def test_log_files_are_committed_and_verified_but_not_part_of_the_output_id(tmp_path):
    store = ArtifactStore(tmp_path)

    def commit(log: bytes, content: bytes = b"weights"):
        run = store.open_run("pretrain", "c" * 64)
        (run.output_dir / "model.bin").write_bytes(content)
        (run.output_dir / "logs").mkdir()
        (run.output_dir / "logs" / "train.log").write_bytes(log)
        return run.commit(stage_version="1", config={}, upstream={}, inputs_digest=None, row_counts={},
                          timings={}, log_files=("logs/*",))

    first = commit(b"12:00:01 step 1, 10.9 clips/s")
    again = commit(b"12:07:44 step 1, 48.2 clips/s")
    assert again.output_id == first.output_id
    assert commit(b"12:07:44 step 1, 48.2 clips/s", b"other weights").output_id != first.output_id
    assert "logs/train.log" in {f.path for f in again.outputs}
    (tmp_path / "pretrain" / "logs" / "train.log").write_bytes(b"12:07:44 step 1, 99.9 clips/s")
    assert store.verify("pretrain", store.success("pretrain"), checksums=True) == \
        ["logs/train.log: contents changed since the commit (sha256)"]


def test_committed_output_is_a_link_switched_atomically(tmp_path):
    store = ArtifactStore(tmp_path)
    _commit(store, "shard", "a" * 64, b"first")
    old_target = (tmp_path / "shard").resolve()
    _commit(store, "shard", "a" * 64, b"second")
    assert (tmp_path / "shard").is_symlink() and not old_target.exists()
    assert [p.name for p in (tmp_path / ".outputs" / "shard").iterdir()] == [(tmp_path / "shard").resolve().name]
    assert not list(tmp_path.glob(".shard.link-*"))


def test_an_old_layout_output_is_moved_aside_and_a_crash_there_is_recovered(tmp_path):
    store = ArtifactStore(tmp_path)
    legacy = tmp_path / "shard"
    legacy.mkdir()
    (legacy / "out.bin").write_bytes(b"legacy")
    record = _commit(store, "shard", "a" * 64, b"new")  # replaces a plain directory
    assert (tmp_path / "shard" / "out.bin").read_bytes() == b"new" and (tmp_path / "shard").is_symlink()
    # A crash right after the plain directory was moved aside: no link, a journal, one complete output.
    target = (tmp_path / "shard").resolve()
    (tmp_path / "shard").unlink()
    (target.parent / "_SWITCHING").write_bytes(b"")
    assert store.success("shard") == record
    assert not (target.parent / "_SWITCHING").exists()
    (tmp_path / "shard").unlink()  # without a journal a missing link is the user's doing: not relinked
    assert store.success("shard") is None


@pytest.mark.parametrize("damage", ["delete", "truncate", "rewrite"])
def test_damaged_committed_files_are_found(tmp_path, damage):
    store = ArtifactStore(tmp_path)
    run = store.open_run("shard", "a" * 64)
    (run.output_dir / "data").mkdir()
    (run.output_dir / "data" / "part.bin").write_bytes(b"0123456789")
    record = run.commit(stage_version="1", config={}, upstream={}, inputs_digest=None, row_counts={}, timings={})
    part = tmp_path / "shard" / "data" / "part.bin"
    if damage == "delete":
        part.unlink()
    elif damage == "truncate":
        part.write_bytes(b"01234")
    else:
        part.write_bytes(b"9876543210")  # same size: only the checksum tells
    expected = {"delete": "missing", "truncate": "5 bytes, committed with 10", "rewrite": "sha256"}[damage]
    assert any(expected in p for p in store.verify("shard", record, checksums=True))
    assert bool(store.verify("shard", record)) == (damage != "rewrite")


COMMIT_LOOP = """
import sys
from pathlib import Path
from pipeline.artifacts import ArtifactStore
store = ArtifactStore(Path(sys.argv[1]))
for version in range(int(sys.argv[2]), 10**6):
    run = store.open_run("shard", "a" * 64)
    for i in range(40):
        (run.output_dir / f"part-{i:03d}.bin").write_bytes(f"{version}:{i}".encode() * 2000)
    run.commit(stage_version="1", config={}, upstream={}, inputs_digest=None, row_counts={"version": version},
               timings={})
    print(version, flush=True)
"""


def test_sigkill_at_random_points_of_commits_never_loses_the_output(tmp_path):
    """A process commits new versions of an output in a loop and is SIGKILLed at random moments (many land
    inside a commit: writing, fsync, the switch, the clean-up). After each kill the committed output is complete
    and is the last version reported done or the one after it."""
    rng = random.Random(0)
    env = os.environ | {"PYTHONPATH": str(REPO)}
    store = ArtifactStore(tmp_path)
    version = 0
    for attempt in range(25):
        proc = subprocess.Popen([sys.executable, "-c", COMMIT_LOOP, str(tmp_path), str(version)], env=env,
                                stdout=subprocess.PIPE, text=True)
        done = [int(proc.stdout.readline())]  # at least one commit, then kill somewhere in the next ones
        time.sleep(rng.uniform(0, 0.3))
        proc.kill()
        done += [int(line) for line in proc.stdout.read().split()]
        proc.wait()
        record = store.success("shard")
        assert record is not None, f"attempt {attempt}: no output after the kill"
        assert record.row_counts["version"] in (done[-1], done[-1] + 1)
        assert store.verify("shard", record, checksums=True) == []
        assert (tmp_path / "shard" / "part-000.bin").read_bytes().startswith(f"{record.row_counts['version']}:".encode())
        version = record.row_counts["version"] + 1
    assert len(list((tmp_path / ".outputs" / "shard").iterdir())) <= 2  # at most one left over by the last kill


KILL_AT_OPERATION = """
import os, shutil, signal, sys
from pathlib import Path
from pipeline.artifacts import ArtifactStore
kill_at, count = int(sys.argv[3]), [0]
def counted(fn):
    def wrapper(*args, **kwargs):
        count[0] += 1
        if count[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return fn(*args, **kwargs)
    return wrapper
store = ArtifactStore(Path(sys.argv[1]))
run = store.open_run("shard", "a" * 64)
for i in range(3):
    (run.output_dir / f"part-{i}.bin").write_bytes(sys.argv[2].encode() * 100)
for name in ("replace", "symlink", "fsync", "unlink", "rename"):
    setattr(os, name, counted(getattr(os, name)))
shutil.rmtree = counted(shutil.rmtree)
run.commit(stage_version="1", config={}, upstream={}, inputs_digest=None, row_counts={}, timings={})
print(count[0])
"""


@pytest.mark.parametrize("layout", ["link", "plain directory"])
def test_sigkill_at_every_file_operation_of_a_commit(tmp_path, layout):
    """The commit is killed at its 1st, 2nd, ... file-system operation (rename, link, fsync, delete): every time
    the store shows the old output or the new one, complete, and a rerun of the commit completes."""
    env = os.environ | {"PYTHONPATH": str(REPO)}

    def commit(workdir: Path, content: str, kill_at: int) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", KILL_AT_OPERATION, str(workdir), content, str(kill_at)],
                              env=env, capture_output=True, text=True)

    def fresh_workdir(path: Path) -> Path:
        commit(path, "old", 0)
        if layout == "plain directory":  # a workdir from before the link layout
            target = (path / "shard").resolve()
            (path / "shard").unlink()
            os.replace(target, path / "shard")
        return path

    operations = int(commit(fresh_workdir(tmp_path / "count"), "new", 0).stdout)
    assert operations > 5
    for kill_at in range(1, operations + 1):
        workdir = fresh_workdir(tmp_path / f"kill-{kill_at}")
        assert commit(workdir, "new", kill_at).returncode == -9
        store = ArtifactStore(workdir)
        record = store.success("shard")
        assert record is not None, f"killed at operation {kill_at}: no output"
        assert store.verify("shard", record, checksums=True) == [], kill_at
        assert (workdir / "shard" / "part-0.bin").read_bytes()[:3] in (b"old", b"new")
        assert commit(workdir, "new", 0).returncode == 0
        assert (workdir / "shard" / "part-0.bin").read_bytes()[:3] == b"new"
