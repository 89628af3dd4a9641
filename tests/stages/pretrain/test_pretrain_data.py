"""The pre-training loader: frame sampling, joint crop/flip of frames and box, corrupt samples, shard-count
check, and exact resumption of the batch stream."""
from __future__ import annotations

import json
from dataclasses import replace
from math import comb
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from fils_model.config import ModelConfig
from pipeline.clips.batches import ClipBatches, ShardCountError, check_shard_count
from pipeline.clips.config import LoaderConfig
from pipeline.clips.stream import ClipBatchStream, Layout, SampleCounter, ShardCycle, StreamError, StreamSettings
from pipeline.shards import ShardItem, ShardSample, iter_shard, plan_shards, shard_paths, shuffled, write_shard
from pipeline.video.clip_config import AugmentConfig, SamplingConfig
from pipeline.video.transforms import apply_crop_flip, crop_box, frame_indices, random_crop_flip
from stages.captions.tables import EMBEDDINGS_FILE
from stages.optical_flow.tables import ACTION_AREAS_FILE
from stages.pretrain.config import PretrainDataConfig
from stages.pretrain.samples import pretrain_stream
from stages.pretrain.side_tables import load_tables
from stages.pretrain.token_mask import token_mask
from stages.shard.tables import read_clips
from tests.builders.shards import write_tar

TINY = ModelConfig(size="tiny", img_size=32, num_frames=4, patch_size=8, text_dim=16, mask_ratio=0.5)



def write_side_tables(keys: list[str], captions_dir: Path, optical_flow_dir: Path, dim: int = 16) -> None:
    """What the captions / optical_flow stages write into their output folders: unit embeddings and one box per
    clip."""
    captions_dir.mkdir(parents=True, exist_ok=True)
    optical_flow_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(len(keys), dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    pq.write_table(pa.table({"key": keys, "embedding": pa.array(list(vectors), pa.list_(pa.float32())),
                             "encoder_id": ["test"] * len(keys), "dim": [dim] * len(keys)}), captions_dir / EMBEDDINGS_FILE)
    boxes = rng.uniform(0.1, 0.4, (len(keys), 2))
    pq.write_table(pa.table({"key": keys, "x1": boxes[:, 0], "y1": boxes[:, 1], "x2": boxes[:, 0] + 0.5,
                             "y2": boxes[:, 1] + 0.5, "status": ["ok"] * len(keys)}), optical_flow_dir / ACTION_AREAS_FILE)


@pytest.fixture(scope="module")
def clips(sharded) -> list[ShardSample]:
    return [s for p in shard_paths(sharded.workdir / "shard", "train") for s in iter_shard(p)]


def settings_for(tmp_path: Path, shards: list[Path], keys: list[str], **data) -> StreamSettings:
    write_side_tables(keys, tmp_path / "captions", tmp_path / "optical_flow")
    return pretrain_stream(tuple(map(str, shards)), PretrainDataConfig(**data), TINY,
                           load_tables(tmp_path / "optical_flow", tmp_path / "captions"), local_batch=4,
                           segment_steps=3, decode_timeout_s=30)


def test_frame_sampling_stride_and_segments():
    rng = np.random.default_rng(0)
    stride = SamplingConfig(mode="stride", stride=4)
    for _ in range(20):
        idx = frame_indices(100, 16, stride, rng)
        assert len(idx) == 16 and 0 <= idx[0] and idx[-1] < 100
        assert all(0 < b - a < 8 for a, b in zip(idx, idx[1:]))  # stride 4 with a per-frame offset in [0, 4)
    fixed = frame_indices(100, 4, SamplingConfig(stride=4, jitter=False), rng)
    assert np.diff(fixed).tolist() == [4, 4, 4]
    short = frame_indices(20, 16, stride, rng)  # shorter than 16 x 4: segments over the whole clip
    assert short == sorted(short) and short[-1] < 20 and short[-1] >= 15
    assert frame_indices(32, 4, SamplingConfig(mode="segment", jitter=False), rng) == [4, 12, 20, 28]
    segs = frame_indices(32, 4, SamplingConfig(mode="segment"), rng)
    assert all(8 * i <= f < 8 * (i + 1) for i, f in enumerate(segs))


def test_joint_crop_flip_keeps_the_box_on_its_pixels():
    """A bright square drawn at the box lands on the tokens of the box's mask, for random crops/flips: every token
    with a pixel more than half lit is in the mask, and every token of the mask has light in it (the antialiased
    resize spreads an edge by less than a pixel: a token next to the box may get a faint glow, never half)."""
    height, width, size, patch = 384, 480, 224, 16
    x1, y1, x2, y2 = 150, 90, 330, 250
    frames = np.zeros((2, height, width, 3), np.uint8)
    frames[:, y1:y2, x1:x2] = 255
    box = (x1 / width, y1 / height, x2 / width, y2 / height)
    rng = np.random.default_rng(1)
    flips = 0
    for _ in range(60):
        crop = random_crop_flip(width, height, AugmentConfig(), rng)
        flips += crop.flip
        out = apply_crop_flip(frames, crop, size)
        brightest = out[0, :, :, 0].reshape(size // patch, patch, size // patch, patch).max(axis=(1, 3))
        mask = token_mask(crop_box(box, crop, width, height), size, patch, 2, 2).reshape(size // patch, -1)
        assert not (brightest[~mask] > 127).any() and (brightest[mask] > 0).all(), crop
    assert 10 < flips < 50


def test_shard_count_check_names_the_fix():
    check_shard_count(4, 2, 2, "train", "pretrain")
    with pytest.raises(ShardCountError) as err:
        check_shard_count(1, 2, 2, "train", "pretrain")
    assert "1 shard(s)" in str(err.value) and "shard.min_shards: 4" in str(err.value)
    assert "pretrain.loader.workers" in str(err.value)


def test_corrupt_sample_is_counted_and_skipped(tmp_path, clips):
    good = clips[:5]
    bad = ShardSample("zz_corrupt", b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8, dict(good[0].meta))
    write_tar(tmp_path / "train-000000.tar", [*good, bad])
    settings = settings_for(tmp_path, [tmp_path / "train-000000.tar"], [s.key for s in [*good, bad]],
                            shuffle_buffer=1)
    batches = ClipBatches(settings, Layout(0, 1, 1), 0, 3, LoaderConfig(workers=1), tmp_path / "state")
    out = list(batches)
    assert len(out) == 3 and all(b["video"].shape == (4, 3, 4, 32, 32) for b in out)
    assert all(torch.isfinite(b["video"]).all() for b in out)
    assert batches.counts["corrupt"] == 2  # 12 good clips = 2 passes over the shard (plus 2 more)
    assert json.loads((tmp_path / "state/counts.rank0.json").read_text())["corrupt"] == 2


def test_failed_captions_are_skipped_and_failed_boxes_take_the_centre(tmp_path, clips):
    write_tar(tmp_path / "train-000000.tar", clips[:6])
    settings = settings_for(tmp_path, [tmp_path / "train-000000.tar"], [s.key for s in clips[:6]], shuffle_buffer=1)
    emb_path, boxes_path = tmp_path / "captions" / EMBEDDINGS_FILE, tmp_path / "optical_flow" / ACTION_AREAS_FILE
    emb, boxes = pq.read_table(emb_path), pq.read_table(boxes_path)
    vectors = emb.column("embedding").to_pylist()
    vectors[0] = [0.0] * 16  # the captions stage's marker of a failed caption
    pq.write_table(emb.set_column(1, "embedding", pa.array(vectors, pa.list_(pa.float32()))), emb_path)
    status = boxes.column("status").to_pylist()
    status[1] = "failed"
    pq.write_table(boxes.set_column(boxes.schema.get_field_index("status"), "status", pa.array(status)),
                   boxes_path)
    tables = load_tables(tmp_path / "optical_flow", tmp_path / "captions")
    assert tables.embedding(clips[0].key) is None and tables.box(clips[1].key) is None
    centre = replace(settings, recipe=replace(settings.recipe, tables=tables))
    batches = ClipBatches(centre, Layout(0, 1, 1), 0, 1, LoaderConfig(workers=0), tmp_path / "a")
    assert len(list(batches)) == 1
    assert batches.counts["no_caption"] == 1 and batches.counts["centre_box"] == 1
    skipping = replace(centre, recipe=replace(centre.recipe, missing_action_area="skip"))
    batches = ClipBatches(skipping, Layout(0, 1, 1), 0, 1, LoaderConfig(workers=0), tmp_path / "b")
    list(batches)
    assert batches.counts["no_caption"] == 1 and batches.counts["no_action_area"] == 1


def _collect(settings: StreamSettings, spans: list[tuple[int, int]], state: Path, workers: int) -> list[dict]:
    out = []
    for start, end in spans:
        out += list(ClipBatches(settings, Layout(0, 1, workers), start, end, LoaderConfig(workers=workers), state))
    return out


@pytest.mark.parametrize("views", [1, 2])
def test_resumed_stream_equals_uninterrupted(tmp_path, clips, sharded, views):
    """Stops at a segment boundary (3) and inside a segment (4) give the same batches, corrupt sample included;
    with one view per clip and with two."""
    rows = read_clips(sharded.workdir / "shard").num_rows
    assert rows == len(clips)
    bad = ShardSample("m_corrupt", b"not a video", dict(clips[0].meta))
    for i, part in enumerate([clips[:4], clips[4:8], clips[8:12], [*clips[12:], bad]]):
        write_tar(tmp_path / f"train-{i:06d}.tar", part)  # 2 workers x 2 interleaved shards
    shards = sorted(tmp_path.glob("*.tar"))
    settings = settings_for(tmp_path, shards, [s.key for s in [*clips, bad]], shuffle_buffer=6, repeated_views=views)
    whole = _collect(settings, [(0, 8)], tmp_path / "a", 2)
    pieces = _collect(settings, [(0, 3), (3, 4), (4, 8)], tmp_path / "b", 2)
    assert len(whole) == len(pieces) == 8
    for a, b in zip(whole, pieces):
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), key
    assert not all(torch.equal(whole[0]["video"], b["video"]) for b in whole[1:])


def test_resume_without_a_saved_position_counts_clips_not_views(tmp_path, clips):
    """A loader position that does not match (here: deleted) is rebuilt from the steps done, assuming no skipped clip:
    with two views per clip a step used half a batch of clips, so with no bad clip the rebuilt position is exact."""
    for i, part in enumerate([clips[:6], clips[6:12]]):
        write_tar(tmp_path / f"train-{i:06d}.tar", part)
    shards = sorted(tmp_path.glob("*.tar"))
    settings = settings_for(tmp_path, shards, [s.key for s in clips[:12]], shuffle_buffer=4, repeated_views=2)
    whole = _collect(settings, [(0, 3)], tmp_path / "a", 1)
    first = _collect(settings, [(0, 2)], tmp_path / "b", 1)
    for saved in (tmp_path / "b").glob("cursor.step00000002.*"):
        saved.unlink()
    pieces = first + _collect(settings, [(2, 3)], tmp_path / "b", 1)
    for a, b in zip(whole, pieces, strict=True):
        assert all(torch.equal(a[key], b[key]) for key in a)


def test_batches_mix_videos_like_random_sampling(tmp_path):
    """An EPIC-KITCHENS-like listing (64 videos x 8 neighbouring narrations, keys in video order) through the shard
    stage's order and planner and one loader stream (rank 1 of 2, worker 1 of 2): a batch holds as many distinct
    videos as a uniformly random batch would. Key-ordered shards read by fixed streams gave ~10 of ~14."""
    videos, per_video, batch = 64, 8, 16
    blob = tmp_path / "clip.mp4"
    blob.write_bytes(b"not decoded here")
    items = [ShardItem(f"P{v:02d}_{n:03d}", blob, {"source_path": f"P{v:02d}.MP4"})
             for v in range(videos) for n in range(per_video)]
    paths = []
    for i, group in enumerate(plan_shards(shuffled(items, seed=0), 1e12, 1000, min_shards=16)):
        paths.append(tmp_path / f"train-{i:06d}.tar")
        write_shard(paths[-1], group)
    settings = pretrain_stream(tuple(map(str, paths)), PretrainDataConfig(), TINY, tables=None, local_batch=batch,
                               segment_steps=1000, decode_timeout_s=30)
    raw = ClipBatchStream(settings, Layout(1, 2, 2), 0, 1).raw_samples(1, 0, SampleCounter())
    keys = [next(raw)["__key__"] for _ in range(batch * 32)]
    distinct = [len({k[:3] for k in keys[i : i + batch]}) for i in range(0, len(keys), batch)]
    total = videos * per_video
    expected = videos * (1 - comb(total - per_video, batch) / comb(total, batch))  # 14.2
    assert np.mean(distinct) >= expected - 0.6, (np.mean(distinct), expected)
    passes = []  # the 4 streams split every pass over the shards between them, and each pass is a new split
    for _ in range(2):
        cycles = [iter(ShardCycle(settings.shards, s, 4, (0, 0, 2), SampleCounter())) for s in range(4)]
        passes.append([[next(c) for _ in range(4)] for c in cycles])
    for dealt in passes:
        assert sorted(url for stream in dealt for url in stream) == sorted(settings.shards)
    assert passes[0] == passes[1]  # seeded
    later = iter(ShardCycle(settings.shards, 0, 4, (0, 0, 2), SampleCounter()))
    first, second = [next(later) for _ in range(4)], [next(later) for _ in range(4)]
    assert set(first) != set(second)


def test_a_stream_whose_every_clip_is_unusable_fails_instead_of_spinning(tmp_path, clips):
    """Readable shards whose clips all fail to decode: after three passes with no usable clip the stream stops
    with an error naming what was dropped (before, it read the shards forever)."""
    bad = [ShardSample(f"bad_{i}", b"not a video", dict(clips[0].meta)) for i in range(3)]
    write_tar(tmp_path / "train-000000.tar", bad)
    settings = settings_for(tmp_path, [tmp_path / "train-000000.tar"], [s.key for s in bad], shuffle_buffer=1)
    with pytest.raises(StreamError, match=r"none usable .*'corrupt'"):
        list(ClipBatches(settings, Layout(0, 1, 1), 0, 2, LoaderConfig(workers=0), tmp_path / "state"))


def test_repeated_views_share_one_decode_and_differ_in_crop_flip_and_mask(tmp_path, clips, monkeypatch):
    """repeated_views: 2 with a batch of 4 = 2 decoded clips x 2 views, adjacent; uint8 frames for the device."""
    from pipeline.clips import stream

    decoded, crops = [], []
    real_decode, real_crop = stream.decode_frames, stream.random_crop_flip
    monkeypatch.setattr(stream, "decode_frames", lambda *a, **k: decoded.append(1) or real_decode(*a, **k))
    monkeypatch.setattr(stream, "random_crop_flip", lambda *a: crops.append(real_crop(*a)) or crops[-1])
    write_tar(tmp_path / "train-000000.tar", clips[:8])
    settings = settings_for(tmp_path, [tmp_path / "train-000000.tar"], [s.key for s in clips[:8]], shuffle_buffer=1,
                            repeated_views=2)
    batches = list(ClipBatches(settings, Layout(0, 1, 1), 0, 6, LoaderConfig(workers=0), tmp_path / "state"))
    assert len(decoded) == 6 * 2  # one decode per clip, not per view
    pairs = list(zip(crops[::2], crops[1::2]))
    assert len(pairs) == 12 and all(a != b for a, b in pairs)
    assert any(a.flip != b.flip for a, b in pairs) and any(a.flip == b.flip for a, b in pairs)  # drawn per view
    for batch in batches:
        assert batch["video"].dtype == torch.uint8 and batch["video"].shape == (4, 3, 4, 32, 32)
        for first in (0, 2):
            a, b = first, first + 1
            assert torch.equal(batch["text_embedding"][a], batch["text_embedding"][b])  # one clip
            assert not torch.equal(batch["video"][a], batch["video"][b])  # its own crop
            assert not torch.equal(batch["mask"][a], batch["mask"][b])  # its own mask
        assert not torch.equal(batch["text_embedding"][0], batch["text_embedding"][2])  # two clips
    assert 0 < sum(int(not torch.equal(b["action_tokens"][0], b["action_tokens"][1])) for b in batches)
    single = settings_for(tmp_path, [tmp_path / "train-000000.tar"], [s.key for s in clips[:8]], shuffle_buffer=1)
    with pytest.raises(ValueError, match="not a multiple of repeated_views 3"):
        replace(single, data=single.data.model_copy(update={"repeated_views": 3}))
