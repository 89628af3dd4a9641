"""Evaluate stage and nightly sweep: test views, a corrupt clip is reported and excluded, the sweep skips what
the results table holds and picks up a new checkpoint."""
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.runner import StageError, run_pipeline
from pipeline.samples import SAMPLES_CSV, SampleSettings, write_samples
from pipeline.shards import ShardItem, iter_shard, shard_paths, write_shard
from pipeline.video.clip_config import SamplingConfig
from pipeline.video.views import spatial_crops, temporal_indices
from stages import registry
from stages.evaluate.results import read_results
from stages.evaluate.sweep import run_sweep
from tests.builders.finetune_set import build_workdir, export_random_encoder, finetune_section, with_sections
from tests.helpers import make_config


def test_temporal_and_spatial_views():
    stride = SamplingConfig(mode="stride", stride=2, jitter=False)
    assert temporal_indices(40, 4, stride, 3) == [[0, 2, 4, 6], [16, 18, 20, 22], [32, 34, 36, 38]]
    segment = SamplingConfig(mode="segment", jitter=False)
    assert temporal_indices(8, 4, segment, 2) == [[0, 2, 4, 6], [1, 3, 5, 7]]
    frames = np.arange(2 * 32 * 64 * 3, dtype=np.uint8).reshape(2, 32, 64, 3)
    crops = spatial_crops(frames, 32, 3)
    assert [c.shape for c in crops] == [(2, 32, 32, 3)] * 3
    np.testing.assert_array_equal(crops[0], frames[:, :, :32])
    np.testing.assert_array_equal(crops[2], frames[:, :, 32:])
    np.testing.assert_array_equal(spatial_crops(frames, 32, 1)[0], frames[:, :, 16:48])


@pytest.fixture(scope="module")
def probed(tmp_path_factory):
    """A workdir with shards and a (fast) linear-probe classifier committed by the finetune stage."""
    cfg = build_workdir(tmp_path_factory.mktemp("evaluate"))
    cfg = with_sections(cfg, cfg.workdir, finetune=finetune_section(mode="linear_probe", epochs=50))
    run_pipeline(registry(), cfg, ["finetune"])
    return cfg


def _corrupt_one_clip(shard_dir: Path, tmp: Path) -> str:
    path = shard_paths(shard_dir, "validation")[0]
    samples = list(iter_shard(path))
    items = []
    for i, sample in enumerate(samples):
        video = tmp / f"{sample.key}.mp4"
        video.write_bytes(b"\x00not an mp4" * 50 if i == 0 else sample.mp4)
        items.append(ShardItem(sample.key, video, sample.meta))
    write_shard(path, items)
    return samples[0].key


def test_evaluate_reports_and_excludes_a_corrupt_clip(probed, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(probed.workdir, work)
    bad = _corrupt_one_clip(work / "shard", tmp_path)
    cfg = with_sections(probed, work)
    outcome = run_pipeline(registry(), cfg, ["evaluate"])[0]
    assert outcome.record.row_counts["excluded"] == 1
    assert outcome.record.row_counts["clips"] == 9  # 10 validation clips, one excluded
    excluded = pq.read_table(work / "evaluate" / "excluded.parquet").to_pylist()
    assert [row["key"] for row in excluded] == [bad]
    assert bad in (work / "evaluate" / "report.md").read_text()
    metrics = pq.read_table(work / "evaluate" / "metrics.parquet").to_pylist()
    assert {r["metric"] for r in metrics} == {"top1", "mean_class_accuracy"}
    assert {r["views"] for r in metrics} == {"2x1"} and all(0 <= r["value"] <= 1 for r in metrics)
    assert len(read_results(work / "results" / "results.parquet")) == len(metrics)
    run_pipeline(registry(), cfg, ["evaluate"], force={"evaluate"})  # a forced re-evaluation replaces its rows
    assert len(read_results(work / "results" / "results.parquet")) == len(metrics)


def test_sweep_skips_evaluated_checkpoints_and_picks_up_a_new_one(probed, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(probed.workdir, work)
    checkpoints = work / "pretrain" / "checkpoints"
    for seed in (1, 2):
        export_random_encoder(checkpoints / f"enc_{seed}", seed)
    sweep = {"checkpoints": ["pretrain/checkpoints/*", "finetune/classifier"], "probes": {"epochs": 20}}
    cfg = with_sections(probed, work, evaluate=probed.evaluate.model_dump(mode="json") | {"sweep": sweep})

    first = run_sweep(cfg, None)
    assert not first.failed and len(first.evaluated) == 3 and not first.skipped
    second = run_sweep(cfg, None)
    assert second.evaluated == [] and len(second.skipped) == 3
    export_random_encoder(checkpoints / "enc_3", 3)
    third = run_sweep(cfg, None)
    assert third.evaluated == [checkpoints / "enc_3"] and len(third.skipped) == 3
    rows = read_results(work / "results" / "results.parquet")
    assert len({r["checkpoint"] for r in rows}) == 4
    assert {r["protocol"] for r in rows} == {"linear_probe_sweep", "linear_probe"}  # encoders; the classifier
    assert third.plots and all(plot.is_file() for plot in third.plots)
    broken = run_sweep(cfg, [work / "missing_encoder"])
    assert list(broken.failed) == [str(work / "missing_encoder")]


def test_sweep_reads_only_a_committed_shard_output(probed, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(probed.workdir, work)
    (work / "shard" / "_SUCCESS.json").unlink()  # as after a shard run killed before its commit
    with pytest.raises(StageError, match="the evaluation sweep needs the output of shard"):
        run_sweep(with_sections(probed, work), [work / "finetune" / "classifier"])


def test_clips_the_shard_stage_lost_are_reported_next_to_the_score(tmp_path):
    """A validation clip whose video is missing never reaches a shard; the evaluation of the split says so
    instead of scoring the subset silently."""
    root = tmp_path / "set"
    samples = root / "samples"
    write_samples(samples, SampleSettings(clips_per_class=8, frames=16, width=64, height=48, real=False))
    with open(samples / SAMPLES_CSV, "a") as fh:
        fh.write("missing/clip.mp4,up,,validation\n")
    cfg = make_config(root / "work", samples, shard={"short_side": 40, "window_s": 3.0},
                      evaluate={"views": {"temporal": 1, "spatial": 1}, "sampling": {"stride": 2}})
    cfg = with_sections(cfg, cfg.workdir, finetune=finetune_section(mode="linear_probe", epochs=20))
    outcome = run_pipeline(registry(), cfg, ["shard", "finetune", "evaluate"])[-1]
    assert outcome.record.row_counts["excluded"] == 1 and outcome.record.row_counts["clips"] == 10
    excluded = pq.read_table(cfg.workdir / "evaluate" / "excluded.parquet").to_pylist()
    assert [r["key"] for r in excluded] == ["missing_clip"] and "not found" in excluded[0]["reason"]
    metrics = pq.read_table(cfg.workdir / "evaluate" / "metrics.parquet").to_pylist()
    assert {(r["clips"], r["excluded"]) for r in metrics} == {(10, 1)}
    assert "1 clips of the split excluded" in (cfg.workdir / "evaluate" / "report.md").read_text()
