"""The optical_flow stage against generated clips with known boxes, on real footage, with broken inputs, and
through the artifact store. TV-L1 runs at a 64 px short side on every 2nd frame to stay affordable."""
import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

from pipeline.artifacts import SUCCESS_FILE, ArtifactStore
from pipeline.runner import StageError, pipeline_status, run_pipeline
from pipeline.samples import SampleSettings, read_true_boxes, write_samples
from pipeline.samples.synthetic import DEFAULT_CLASSES
from pipeline.shards import SHARDS_SUBDIR, shard_paths
from pipeline.stage import StageResult, StageSpec
from stages.optical_flow import stage as optical_flow
from stages.optical_flow.boxes import CENTRE_BOX, box_iou
from stages.optical_flow.tables import read_action_areas
from stages.shard import stage as shard
from stages.shard.tables import read_clips
from tests.helpers import make_config, reseal

SPECS = {"shard": shard.SPEC, "optical_flow": optical_flow.SPEC}
SMALL_UNITS = ["optical_flow.clips_per_unit=4"]  # a single shard still keeps both workers busy
TVL1 = ["optical_flow.backend=tvl1", "optical_flow.short_side=64", "optical_flow.frame_step=2"]


def _samples(root: Path, **settings) -> Path:
    write_samples(root, SampleSettings(clips_per_class=2, frames=24, **settings))
    return root


def _sharded(workdir: Path, samples: Path) -> Path:
    run_pipeline(SPECS, make_config(workdir, samples), ["shard"])
    return workdir


def _copy_shard(src: Path, workdir: Path) -> Path:
    shutil.copytree(src / "shard", workdir / "shard")
    return workdir


def _run(workdir: Path, samples: Path, overrides: list[str], **kwargs):
    cfg = make_config(workdir, samples, [*SMALL_UNITS, *overrides])
    return cfg, run_pipeline(SPECS, cfg, ["shard", "optical_flow"], **kwargs)


def _rows(workdir: Path) -> dict[str, dict]:
    return {r["key"]: r for r in read_action_areas(workdir / "optical_flow").to_pylist()}


def _box(row: dict) -> tuple[float, float, float, float]:
    return row["x1"], row["y1"], row["x2"], row["y2"]


def _true_iou(workdir: Path, samples: Path, rows: dict[str, dict]) -> float:
    """Mean IoU of the union box with the true union box over the generated clips with a moving object."""
    ious = []
    for clip in read_clips(workdir / "shard").to_pylist():
        if clip["source_path"].startswith("synthetic/") and clip["label_name"] != "static":
            boxes = np.array(read_true_boxes(samples / clip["source_path"])["boxes"])
            ious.append(box_iou(_box(rows[clip["key"]]), (*boxes[:, :2].min(0), *boxes[:, 2:].max(0))))
    assert len(ious) >= 10
    return float(np.mean(ious))


@pytest.fixture(scope="module")
def flow_samples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _samples(tmp_path_factory.mktemp("flow_samples"), classes=(*DEFAULT_CLASSES, "static"))


@pytest.fixture(scope="module")
def flow_shards(tmp_path_factory: pytest.TempPathFactory, flow_samples: Path) -> Path:
    """A workdir whose shard stage is done (read-only: tests copy its shard output)."""
    return _sharded(tmp_path_factory.mktemp("flow_shards"), flow_samples)


@pytest.fixture(scope="module")
def areas(tmp_path_factory, flow_shards, flow_samples) -> dict[str, tuple[Path, dict[str, dict]]]:
    """backend -> (workdir, rows) for dis (defaults), tvl1 and mv."""
    out = {}
    for backend, overrides in (("dis", []), ("tvl1", TVL1), ("mv", ["optical_flow.backend=mv"])):
        workdir = _copy_shard(flow_shards, tmp_path_factory.mktemp(f"flow_{backend}"))
        _run(workdir, flow_samples, overrides)
        out[backend] = (workdir, _rows(workdir))
    return out


@pytest.mark.parametrize("backend", ["dis", "tvl1", "mv"])
def test_boxes_match_the_true_boxes(areas, flow_samples, backend):
    workdir, rows = areas[backend]
    clips = read_clips(workdir / "shard").to_pylist()
    assert sorted(rows) == sorted(c["key"] for c in clips)
    assert _true_iou(workdir, flow_samples, rows) >= 0.7
    for clip in clips:
        row = rows[clip["key"]]
        assert row["backend"] == backend
        if clip["label_name"] == "static":
            assert row["status"] == "fallback" and _box(row) == pytest.approx(CENTRE_BOX) and "motion" in row["reason"]
        else:
            assert row["status"] == "ok" and row["reason"] is None, row
            assert 0 <= row["x1"] < row["x2"] <= 1 and 0 <= row["y1"] < row["y2"] <= 1
            assert len(row["frame_boxes"]) == len(row["frame_indices"]) > 1


def test_dis_agrees_with_tvl1_on_real_footage(areas):
    dis, tvl1 = areas["dis"][1], areas["tvl1"][1]
    real = [k for k in dis if k.startswith("real_")]
    assert len(real) >= 5
    assert np.mean([box_iou(_box(dis[k]), _box(tvl1[k])) for k in real]) >= 0.7


def test_contact_sheets_are_listed(areas):
    workdir = areas["dis"][0]
    record = ArtifactStore(workdir).success("optical_flow")
    sheets = record.extra["images"]
    assert sheets and all((workdir / "optical_flow" / s).is_file() for s in sheets)
    assert set(sheets) <= {o.path for o in record.outputs}
    assert record.row_counts["clips"] == len(areas["dis"][1])


@pytest.mark.parametrize("backend", ["dis", "tvl1"])
def test_boxes_survive_a_panning_camera(tmp_path_factory, backend):
    root = tmp_path_factory.getbasetemp()
    samples = root / "pan_samples"
    if not samples.exists():
        _sharded(root / "pan_shards", _samples(samples, pan_px_per_frame=2.0, real=False))
    workdir = _copy_shard(root / "pan_shards", tmp_path_factory.mktemp(f"pan_{backend}"))
    _run(workdir, samples, TVL1 if backend == "tvl1" else [])
    assert _true_iou(workdir, samples, _rows(workdir)) >= 0.6


def _rewrite_shard(path: Path, corrupt: str, drop: str) -> None:
    """Garble one clip's mp4 bytes and leave another clip out of the tar."""
    with tarfile.open(path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(path, "w") as tar:
        for member, data in members:
            if member.name.startswith(drop + "."):
                continue
            if member.name == f"{corrupt}.mp4":
                data = data[:64] + bytes(len(data) - 64)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))


def test_a_truncated_committed_shard_is_rebuilt_not_read(tmp_path, flow_shards, flow_samples):
    """Damage to a committed upstream file is never mistaken for bad clips: alone, optical_flow refuses to read
    it; with shard in the run, shard rebuilds the same bytes and optical_flow has no failed clip."""
    workdir = _copy_shard(flow_shards, tmp_path)
    tar = shard_paths(workdir / "shard")[0]
    original = tar.read_bytes()
    tar.write_bytes(original[: int(len(original) * 0.55)])
    cfg = make_config(workdir, flow_samples, [*SMALL_UNITS, "optical_flow.contact_sheet.clips=0"])
    with pytest.raises(StageError, match=r"upstream shard is corrupt.*train-000000.tar.*--stages shard,optical_flow"):
        run_pipeline(SPECS, cfg, ["optical_flow"])
    shard, flow = run_pipeline(SPECS, cfg, ["shard", "optical_flow"])
    assert shard.action == "ran" and tar.read_bytes() == original
    assert flow.record.row_counts["failed"] == 0


def test_undecodable_and_missing_clips_get_failed_rows(tmp_path, flow_shards, flow_samples):
    workdir = _copy_shard(flow_shards, tmp_path)
    keys = sorted(read_clips(workdir / "shard").column("key").to_pylist())
    corrupt, drop = keys[1], keys[2]
    _rewrite_shard(shard_paths(workdir / "shard")[0], corrupt, drop)
    reseal(workdir, "shard")
    _, outcomes = _run(workdir, flow_samples, ["optical_flow.contact_sheet.clips=0"])
    assert outcomes[0].action == "skipped"
    rows = _rows(workdir)
    assert sorted(rows) == keys and outcomes[-1].record.row_counts["failed"] == 2
    assert rows[corrupt]["status"] == "failed" and "Decode" in rows[corrupt]["reason"]
    assert rows[drop]["status"] == "failed" and "not found in shard" in rows[drop]["reason"]
    assert rows[corrupt]["x1"] is None and rows[corrupt]["frame_boxes"] == []
    assert all(r["status"] != "failed" for k, r in rows.items() if k not in (corrupt, drop))
    assert outcomes[-1].record.extra["images"] == []


def _noop_plan(ctx):
    return []


def _noop_finalize(ctx, units):
    return StageResult(row_counts={})


# Stands in for a stage that reads the action areas, to show that staleness propagates downstream.
DOWNSTREAM = StageSpec(name="captions", version="test", upstream=("optical_flow",), config_of=lambda cfg: {},
                       plan=_noop_plan, process=lambda *args: {}, finalize=_noop_finalize)


def test_skip_force_and_stale(tmp_path, flow_shards, flow_samples):
    workdir = _copy_shard(flow_shards, tmp_path)
    specs = {**SPECS, "captions": DOWNSTREAM}
    fast = [*SMALL_UNITS, "optical_flow.contact_sheet.clips=1"]
    cfg = make_config(workdir, flow_samples, fast)
    assert [o.action for o in run_pipeline(specs, cfg)] == ["skipped", "ran", "ran"]
    assert [o.action for o in run_pipeline(specs, cfg)] == ["skipped", "skipped", "skipped"]

    changed = make_config(workdir, flow_samples, [*fast, "optical_flow.boxes.rel_max=0.5"])
    states = {s.stage: s.state for s in pipeline_status(specs, changed, ArtifactStore(workdir))}
    assert states == {"shard": "done", "optical_flow": "stale", "captions": "stale"}
    assert [o.action for o in run_pipeline(specs, changed)] == ["skipped", "ran", "ran"]
    assert ArtifactStore(workdir).success("optical_flow").config["boxes"]["rel_max"] == 0.5

    # The worker count and unit size change how, not what: no rerun.
    regrouped = make_config(workdir, flow_samples, [*fast, "optical_flow.boxes.rel_max=0.5",
                                                    "optical_flow.clips_per_unit=50", "runtime.workers=1"])
    assert [o.action for o in run_pipeline(specs, regrouped)] == ["skipped", "skipped", "skipped"]
    forced = run_pipeline(specs, changed, force={"optical_flow"})
    assert [o.action for o in forced] == ["skipped", "ran", "skipped"]  # the same bytes: downstream stays fresh
    assert json.loads((workdir / "optical_flow" / SUCCESS_FILE).read_text())["output_id"] == forced[1].record.output_id
    assert (workdir / "optical_flow" / "action_areas.parquet").is_file()
    assert not (workdir / ".staging" / "optical_flow").exists() and (workdir / "shard" / SHARDS_SUBDIR).is_dir()


@pytest.mark.parametrize(("shard_setting", "message"), [
    ("shard.reencode=false", r"shard.reencode: false"),  # copied bytes may have no vectors (MJPEG, VP9, ...)
    ("shard.preset=medium", r"preset 'medium'"),  # 3 reference frames: a vector may span several frames
])
def test_mv_refuses_shards_whose_vectors_would_mislead(tmp_path, flow_samples, shard_setting, message):
    with pytest.raises(StageError, match=message):
        _run(tmp_path, flow_samples, [shard_setting, "optical_flow.backend=mv"])
    assert (tmp_path / "shard" / "_SUCCESS.json").is_file() and not (tmp_path / "optical_flow").exists()
