"""The `fils` flow in-process on a temporary Prefect server: task runners, retries, failure reporting."""
import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import stages.captions.stage
import stages.shard.stage
from flows.fils_flow import fils
from tests.helpers import hold_stage_lock

pytestmark = pytest.mark.usefixtures("prefect_backend")


def _outputs(workdir: Path) -> dict[str, str]:
    digests = {}
    for stage in ("shard", "captions"):
        for path in sorted((workdir / stage).rglob("*")):
            if path.is_file() and path.name != "_SUCCESS.json":
                digests[str(path.relative_to(workdir))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


def _overrides(workdir: Path, samples: Path, *extra: str) -> list[str]:
    return [f"workdir={workdir}", f"data.source.root={samples}", f"data.source.annotations={samples / 'samples.csv'}",
            "shard.short_side=64", "captions.source=narration", *extra]


@pytest.mark.parametrize("runner", ["thread", "process", "dask"])
def test_task_runners_give_identical_outputs(tmp_path_factory, few_samples, runner):
    workdir = tmp_path_factory.getbasetemp() / f"runner-{runner}"
    actions = fils(config_path="configs/demo.yaml", stages=["shard", "captions"],  # a unit per video, per shard
                   overrides=_overrides(workdir, few_samples, f"runtime.task_runner={runner}", "shard.min_shards=2"))
    assert actions == {"shard": "ran", "captions": "ran"}
    outputs = _outputs(workdir)
    assert sum(k.endswith(".tar") for k in outputs) >= 2 and "captions/embeddings.parquet" in outputs
    if runner != "thread":  # the thread case ran first (parametrize order) and is the reference
        assert outputs == _outputs(tmp_path_factory.getbasetemp() / "runner-thread")


_FAIL_MARKER = "fail-once-marker"


def _fail_once(ctx, unit, out_dir):
    """Fails the first attempt of the first shard (a transient error), then behaves."""
    marker = Path(ctx.workdir) / _FAIL_MARKER
    if unit.id.endswith("000000") and not marker.exists():
        marker.write_text("failed once")
        raise OSError("transient: storage hiccup")
    return stages.captions.stage.process_shard(ctx, unit, out_dir)


def _always_fail(ctx, unit, out_dir):
    raise OSError("disk on fire")


def test_failed_unit_is_retried_and_persistent_failure_fails_the_flow(tmp_path, samples_dir, monkeypatch):
    overrides = _overrides(tmp_path, samples_dir)
    monkeypatch.setattr(stages.captions.stage, "SPEC", replace(stages.captions.stage.SPEC, process=_fail_once))
    assert fils(config_path="configs/demo.yaml", stages=["shard", "captions"], overrides=overrides) == \
        {"shard": "ran", "captions": "ran"}
    assert (tmp_path / _FAIL_MARKER).exists() and (tmp_path / "captions" / "_SUCCESS.json").exists()

    monkeypatch.setattr(stages.captions.stage, "SPEC", replace(stages.captions.stage.SPEC, process=_always_fail))
    state = fils(config_path="configs/demo.yaml", stages=["shard", "captions"], overrides=overrides,
                 force_stages=["captions"], return_state=True)
    assert state.is_failed()
    assert "stage captions failed" in state.message and "disk on fire" in state.message
    monkeypatch.undo()
    # the completed stage stays cached; the failed one keeps its previous committed output
    assert fils(config_path="configs/demo.yaml", stages=["shard", "captions"], overrides=overrides,
                force_stages=["captions"]) == {"shard": "skipped", "captions": "ran"}
    assert len(pq.read_table(tmp_path / "captions" / "captions.parquet")) == \
        len(pq.read_table(tmp_path / "shard" / "clips.parquet"))


@pytest.mark.parametrize("runner", ["thread", "process", "dask"])
def test_a_unit_past_its_time_limit_is_stopped_under_every_runner(tmp_path, few_samples, runner):
    """Every unit gets 50 ms (a shard unit takes far longer): each is killed, none is recorded as a bad video,
    the stage fails and commits nothing."""
    state = fils(config_path="configs/demo.yaml", stages=["shard"], return_state=True,
                 overrides=_overrides(tmp_path, few_samples, f"runtime.task_runner={runner}",
                                      "runtime.unit_timeout_s=0.05", "runtime.unit_retries=0"))
    assert state.is_failed()
    assert "stage shard failed" in state.message and "timed out after" in state.message
    assert not (tmp_path / "shard").exists()


def test_a_run_already_on_the_stage_keeps_the_flow_out(tmp_path, samples_dir):
    """A CLI run (here: a process holding the stage's lock as a CLI run does) and a Prefect run on one workdir."""
    holder = hold_stage_lock(tmp_path, "shard")
    try:
        state = fils(config_path="configs/demo.yaml", stages=["shard"], return_state=True,
                     overrides=_overrides(tmp_path, samples_dir))
        assert state.is_failed() and "is busy: stage shard is held run by" in state.message
        assert f"pid {holder.pid}" in state.message
    finally:
        holder.kill()
        holder.wait()
    assert fils(config_path="configs/demo.yaml", stages=["shard"], overrides=_overrides(tmp_path, samples_dir)) == \
        {"shard": "ran"}


def _fail_one_video(ctx, unit, out_dir):
    if unit.payload["name"] == "synthetic/circle/circle_001.mp4":
        raise OSError("this video's disk sector is unreadable")
    return stages.shard.stage.process_video(ctx, unit, out_dir)


def test_a_failing_unit_fails_alone_inside_its_batch(tmp_path, samples_dir, monkeypatch):
    """Every unit of the batch but the failing one is sealed; the stage fails naming only that unit, and the rerun
    runs only it."""
    overrides = _overrides(tmp_path, samples_dir, "runtime.unit_retries=1", "runtime.batch_max_units=500")
    monkeypatch.setattr(stages.shard.stage, "SPEC", replace(stages.shard.stage.SPEC, process=_fail_one_video))
    state = fils(config_path="configs/demo.yaml", stages=["shard"], overrides=overrides, return_state=True)
    assert state.is_failed() and "shard: 1 of " in state.message and "disk sector is unreadable" in state.message
    units = [d for d in (tmp_path / ".staging" / "shard").glob("*/units/*") if not d.name.startswith(".")]
    monkeypatch.undo()
    assert fils(config_path="configs/demo.yaml", stages=["shard"], overrides=overrides) == {"shard": "ran"}
    record = json.loads((tmp_path / "shard" / "_SUCCESS.json").read_text())
    assert record["timings"]["units_run"] == 1 and record["timings"]["units"] == len(units) + 1
