"""The shard stage end to end on real files: bad inputs, determinism, caching semantics, kill and rerun."""
import hashlib
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.artifacts import ArtifactStore
from pipeline.runner import StageError, pipeline_status, run_pipeline
from pipeline.shards import ShardItem, iter_shard, shard_paths, write_shard
from stages import registry
from stages.config import load_config
from stages.shard.tables import read_clips
from tests.builders.videos import gradient_frames, write_audio_only, write_mjpeg_avi, write_video
from tests.helpers import REPO, make_config


def _folder_config(workdir: Path, root: Path, *overrides: str):
    tree = {"workdir": str(workdir), "data": {"source": {"kind": "folder", "root": str(root)}},
            "runtime": {"workers": 2, "progress": False}, "shard": {"short_side": 32}}
    return load_config(tree=tree, overrides=list(overrides))


def _shard_state(specs, cfg, store):
    return next(s for s in pipeline_status(specs, cfg, store) if s.stage == "shard")


def _digest(workdir: Path) -> dict[str, str]:
    files = sorted((workdir / "shard").rglob("*.tar")) + [workdir / "shard" / "clips.parquet"]
    out = {str(p.relative_to(workdir)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    out["clips"] = str(pq.read_table(workdir / "shard" / "clips.parquet").to_pylist())
    return out


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad")
    ok = root / "ok"
    ok.mkdir()
    frames = gradient_frames(30, 64, 48)
    write_video(ok / "plain.mp4", frames)
    write_video(ok / "rotated.mp4", frames, rotation=90)
    write_video(ok / "vfr.mp4", frames[:10], fps=25, pts_ms=[0, 40, 160, 200, 320, 360, 480, 520, 640, 680])
    write_video(ok / "odd.mkv", gradient_frames(30, 65, 49), pix_fmt="yuv444p")
    write_mjpeg_avi(ok / "overreports.avi", frames[:12], claimed_frames=400)
    bad = root / "bad"
    bad.mkdir()
    (bad / "empty.mp4").write_bytes(b"")
    (bad / "notes.mp4").write_text("this is not a video")
    write_audio_only(bad / "audio_only.mp4")
    write_mjpeg_avi(bad / "unknown_codec.avi", frames[:5], fourcc=b"QQQQ")
    full = write_video(root / "full.mp4", frames)
    from pipeline.video.encode import H264Writer  # faststart MP4: a cut file still opens
    writer = H264Writer(root / "fs.mp4", 64, 48, 10, 8, 18, "veryfast")
    for image in frames:
        writer.write(image)
    writer.close()
    (bad / "truncated.mp4").write_bytes((root / "fs.mp4").read_bytes()[:5000])
    (bad / "truncated_no_index.mp4").write_bytes(full.read_bytes()[:3000])
    (root / "fs.mp4").unlink()
    full.unlink()
    return root


def test_bad_inputs_are_rejected_with_reasons_and_the_rest_is_sharded(tmp_path, bad_inputs):
    cfg = _folder_config(tmp_path, bad_inputs)
    (outcome,) = run_pipeline(registry(), cfg, ["shard"])
    rejects = {r["source_path"]: r["reason"] for r in pq.read_table(tmp_path / "shard" / "rejects.parquet").to_pylist()}
    assert set(rejects) == {f"bad/{n}" for n in ("empty.mp4", "notes.mp4", "audio_only.mp4", "unknown_codec.avi",
                                                  "truncated.mp4", "truncated_no_index.mp4")}
    assert "empty file" in rejects["bad/empty.mp4"]
    assert "not a readable media file" in rejects["bad/notes.mp4"]
    assert "no video stream" in rejects["bad/audio_only.mp4"]
    assert "codec" in rejects["bad/unknown_codec.avi"]
    assert "truncated" in rejects["bad/truncated.mp4"]
    assert "not a readable media file" in rejects["bad/truncated_no_index.mp4"]
    clips = {r["key"]: r for r in read_clips(tmp_path / "shard").to_pylist()}
    assert set(clips) == {"ok_plain", "ok_rotated", "ok_vfr", "ok_odd", "ok_overreports"}
    assert (clips["ok_rotated"]["width"], clips["ok_rotated"]["height"]) == (32, 42)
    assert clips["ok_odd"]["width"] % 2 == 0 and clips["ok_odd"]["height"] == 32
    assert clips["ok_overreports"]["num_frames"] == 12  # decoded frames, not the header's 400
    assert all(r["label_name"] == "ok" and r["split"] == "train" for r in clips.values())  # parent folder = label
    assert outcome.record.row_counts == {"clips": 5, "rejects": 6, "shards": 1, "videos": 11}


def test_nothing_usable_fails_with_a_clear_message(tmp_path, bad_inputs):
    cfg = _folder_config(tmp_path, bad_inputs / "bad")
    with pytest.raises(StageError, match="no usable clip left"):
        run_pipeline(registry(), cfg, ["shard"])
    assert not (tmp_path / "shard").exists()


def test_shards_are_byte_identical_across_reruns_and_worker_counts(tmp_path, samples_dir, sharded):
    reference = _digest(sharded.workdir)
    for workers in (1, 0):
        cfg = make_config(tmp_path / f"w{workers}", samples_dir, [f"runtime.workers={workers}"])
        run_pipeline(registry(), cfg, ["shard"])
        assert _digest(cfg.workdir) == reference


def test_shard_contents_keys_and_manifest(sharded):
    clips = read_clips(sharded.workdir / "shard").to_pylist()
    keys = [c["key"] for c in clips]
    assert len(keys) == len(set(keys)) and all("." not in k for k in keys)
    in_tars = {}
    for shard in shard_paths(sharded.workdir / "shard"):
        for sample in iter_shard(shard):
            in_tars[sample.key] = (shard.name, sample.meta)
    assert set(in_tars) == set(keys)
    for clip in clips:
        shard, meta = in_tars[clip["key"]]
        assert shard == clip["shard"] and shard.startswith(clip["split"] + "-")
        assert meta["num_frames"] == clip["num_frames"] and min(clip["width"], clip["height"]) == 96
    labelled = [c for c in clips if c["label_name"]]
    assert {c["label_name"] for c in labelled} == {"circle", "left_to_right", "right_to_left", "top_to_bottom",
                                                   "bottom_to_top"}
    assert all(c["narration"].startswith("a striped square") for c in labelled)
    windows = [c for c in clips if c["source_path"] == "real/bikes.mp4"]
    assert sorted(c["key"] for c in windows) == ["real_bikes_w0000", "real_bikes_w0001"]  # 6 s cut into 3 s windows
    with tarfile.open(shard_paths(sharded.workdir / "shard")[0]) as tar:
        assert {(m.mtime, m.uname) for m in tar.getmembers()} == {(0, "fils")}  # reproducible tar headers


def test_skip_force_and_stale(tmp_path, samples_dir):
    cfg = make_config(tmp_path, samples_dir)
    specs = registry()
    (first,) = run_pipeline(specs, cfg, ["shard"])
    assert first.action == "ran"
    (again,) = run_pipeline(specs, cfg, ["shard"])
    assert again.action == "skipped" and again.record.output_id == first.record.output_id
    (forced,) = run_pipeline(specs, cfg, ["shard"], force={"shard"})
    assert forced.action == "ran" and forced.record.output_id == first.record.output_id  # the same bytes again
    changed = make_config(tmp_path, samples_dir, ["shard.short_side=64"])
    store = ArtifactStore(tmp_path)
    assert _shard_state(specs, changed, store).state == "stale"
    more = samples_dir / "synthetic" / "circle" / "circle_000.mp4"
    os.utime(more, ns=(more.stat().st_atime_ns, more.stat().st_mtime_ns + 10**9))  # an input file changed
    status = _shard_state(specs, cfg, store)
    assert status.state == "stale" and status.reason == "changed: input files"
    assert _shard_state(specs, changed, store).reason == "changed: settings shard.short_side; input files"
    (touched,) = run_pipeline(specs, cfg, ["shard"])  # a touched video re-encodes to the same clips: the output
    assert touched.action == "ran" and touched.record.output_id == first.record.output_id  # id, downstream fresh
    run_pipeline(specs, changed, ["shard"])
    assert _shard_state(specs, changed, store).state == "done"
    # the runtime section (worker count) never invalidates outputs
    same = make_config(tmp_path, samples_dir, ["shard.short_side=64", "runtime.workers=1"])
    assert _shard_state(specs, same, store).state == "done"


def test_killed_run_leaves_nothing_visible_and_rerun_resumes(tmp_path, sharded):
    samples = Path(sharded.data.source.root)
    config = tmp_path / "c.yaml"
    config.write_text(
        f"workdir: {tmp_path / 'work'}\n"
        f"data: {{source: {{kind: csv, root: {samples}, annotations: {samples / 'samples.csv'}}}}}\n"
        "runtime: {workers: 1, progress: false}\nshard: {short_side: 96, window_s: 3.0}\n")
    cmd = [sys.executable, "-m", "stages.cli", "run", "-c", str(config), "--stages", "shard"]
    proc = subprocess.Popen(cmd, cwd=REPO, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    units = tmp_path / "work" / ".staging" / "shard"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(units.glob("*/units/v*"))) < 3:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    sealed = len(list(units.glob("*/units/v*")))
    assert sealed >= 3, proc.stdout.read().decode()
    assert not (tmp_path / "work" / "shard").exists()  # no half-written output is visible
    rerun = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{sealed} already done" in rerun.stderr or f"{sealed + 1} already done" in rerun.stderr
    assert _digest(tmp_path / "work") == _digest(sharded.workdir)


def test_training_split_is_shuffled_across_shards_and_short_segments_are_kept(tmp_path):
    """Annotated segments of 8 videos: the training split's shards each mix several videos (a seeded shuffle,
    not key order), the validation split stays in key order, a 0.1 s segment (one frame; EK-100 has 557 test
    segments under 0.5 s) is kept, and a missing validation video is a reject row that names its split."""
    root = tmp_path / "videos"
    root.mkdir()
    lines = ["path,label,start,end,split"]
    for v in range(8):
        write_video(root / f"v{v}.mp4", gradient_frames(40, 48, 32, seed=v), fps=10)  # 4 s
        for s in range(6):
            lines.append(f"v{v}.mp4,{s % 3},{s * 0.6:.1f},{s * 0.6 + 0.5:.1f},train")
    lines += ["v0.mp4,1,1.0,1.1,validation", "v1.mp4,2,0.0,2.0,validation", "v2.mp4,0,2.0,3.0,validation",
              "gone.mp4,0,0.0,1.0,validation"]
    (root / "clips.csv").write_text("\n".join(lines) + "\n")
    tree = {"workdir": str(tmp_path / "work"),
            "data": {"source": {"kind": "csv", "root": str(root), "annotations": str(root / "clips.csv")}},
            "runtime": {"workers": 2, "progress": False},
            "shard": {"short_side": 32, "min_shards": 4, "min_clip_s": 0.5}}
    run_pipeline(registry(), load_config(tree=tree), ["shard"])
    clips = pq.read_table(tmp_path / "work" / "shard" / "clips.parquet").to_pylist()
    assert len(clips) == 8 * 6 + 3
    short = next(c for c in clips if c["split"] == "validation" and c["source_path"] == "v0.mp4")
    assert short["num_frames"] == 1
    train_shards = shard_paths(tmp_path / "work" / "shard", "train")
    assert len(train_shards) == 4
    videos_per_shard = [len({s.meta["source_path"] for s in iter_shard(p)}) for p in train_shards]
    assert min(videos_per_shard) >= 5, videos_per_shard  # key order would give 2 videos per shard
    train_keys = [s.key for p in train_shards for s in iter_shard(p)]
    assert train_keys != sorted(train_keys)
    val_keys = [s.key for p in shard_paths(tmp_path / "work" / "shard", "validation") for s in iter_shard(p)]
    assert val_keys == sorted(val_keys)
    rejects = pq.read_table(tmp_path / "work" / "shard" / "rejects.parquet").to_pylist()
    assert [(r["source_path"], r["split"], r["clips"]) for r in rejects] == [("gone.mp4", "validation", 1)]


def test_shards_are_read_from_any_workdir_name(tmp_path):
    """WebDataset takes a string for a URL list ("a::b") with brace expansion; a path is just a path."""
    folder = tmp_path / "runs::v2 {a,b}"
    folder.mkdir()
    clip = folder / "clip.mp4"
    clip.write_bytes(b"not decoded here")
    write_shard(folder / "train-000000.tar", [ShardItem("k0", clip, {"key": "k0"})])
    (sample,) = iter_shard(folder / "train-000000.tar")
    assert sample.key == "k0" and sample.mp4 == b"not decoded here"


def test_a_dataset_subset_logs_a_summary_not_a_line_per_missing_clip(tmp_path, samples_dir, caplog):
    """Full annotation files over a few downloaded videos: 60 clips of 30 missing videos, one present video."""
    rows = ["path,label,text,split", "synthetic/circle/circle_000.mp4,circle,,train"]
    rows += [f"missing/video_{v:02d}.mp4,circle,,train" for v in range(30) for _ in range(2)]
    listing = tmp_path / "subset.csv"
    listing.write_text("\n".join(rows) + "\n")
    cfg = make_config(tmp_path / "work", samples_dir, [f"data.source.annotations={listing}"])
    with caplog.at_level("WARNING", logger="fils.shard"):
        (outcome,) = run_pipeline(registry(), cfg, ["shard"])
    lines = [r.getMessage() for r in caplog.records if r.name == "fils.shard"]
    assert len(lines) == 21 and lines[0].startswith("rejected missing/video_00.mp4 (2 clips): video named")
    assert lines[-1] == "... and 20 more clip(s) of 10 more video(s) rejected; every one is in rejects.parquet"
    assert pq.read_table(tmp_path / "work" / "shard" / "rejects.parquet").num_rows == 60
    assert outcome.record.row_counts["clips"] == 1
