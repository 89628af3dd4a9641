import json

import pytest

from pipeline.artifacts import SUCCESS_FILE, UNIT_FILE, ArtifactStore, new_unit_tmp, seal_unit, stage_fingerprint


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
    store = ArtifactStore(tmp_path)
    (tmp_path / "shard").mkdir()
    (tmp_path / "shard" / SUCCESS_FILE).write_text("{not json")
    assert store.success("shard") is None
    with pytest.raises(ValueError, match="unknown stage"):
        store.stage_dir("shards")
