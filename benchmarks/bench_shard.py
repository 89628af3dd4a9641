"""Shard-stage throughput, and reading clips back from shards versus from the original files.

Prints JSON. In one run, on the same videos:
  * shard stage clips/s (probe + cut + re-encode + pack), next to plain decord decoding frames/s of the sources;
  * clips/s of decoding 16 frames at 224 px from the shards, next to decoding the same clips from the sources.
Target: reading from shards at least as fast as from the original files.

    python benchmarks/bench_shard.py [--clips-per-class 8] [--workers 2]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import decord

from pipeline.runner import run_pipeline
from pipeline.samples import SAMPLES_CSV, SampleSettings, write_samples
from pipeline.shards import iter_shard, shard_paths
from pipeline.video.decode import decode_frames, resize_frames, uniform_indices
from stages import registry
from stages.config import load_config
from stages.shard.tables import read_clips

FRAMES, SIZE = 16, 224


def _decode_sources(videos: list[Path]) -> float:
    frames, start = 0, time.perf_counter()
    for video in videos:
        reader = decord.VideoReader(str(video), ctx=decord.cpu(0), num_threads=1)
        for i in range(len(reader)):
            reader[i].asnumpy()
            frames += 1
    return frames / (time.perf_counter() - start)


def _read_from_shards(shard_dir: Path) -> tuple[float, int]:
    count, start = 0, time.perf_counter()
    for shard in shard_paths(shard_dir):
        for sample in iter_shard(shard):
            n = sample.meta["num_frames"]
            resize_frames(decode_frames(sample.mp4, uniform_indices(n, FRAMES)), SIZE)
            count += 1
    return count / (time.perf_counter() - start), count


def _read_from_files(root: Path, clips: list[dict]) -> float:
    start = time.perf_counter()
    for clip in clips:
        reader = decord.VideoReader(str(root / clip["source_path"]), ctx=decord.cpu(0), num_threads=1)
        fps = reader.get_avg_fps()
        first = int(round(clip["start"] * fps))
        last = min(len(reader), int(round(clip["end"] * fps)))
        indices = [first + i for i in uniform_indices(max(1, last - first), FRAMES)]
        resize_frames(reader.get_batch(indices).asnumpy(), SIZE)
    return len(clips) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips-per-class", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "samples"
        write_samples(root, SampleSettings(clips_per_class=args.clips_per_class, width=320, height=240, frames=64))
        cfg = load_config(tree={
            "workdir": str(Path(tmp) / "work"),
            "data": {"source": {"kind": "csv", "root": str(root), "annotations": str(root / SAMPLES_CSV)}},
            "runtime": {"workers": args.workers, "progress": False}, "shard": {"short_side": 320}})
        videos = sorted(p for p in root.rglob("*.mp4"))
        decord_fps = _decode_sources(videos)
        start = time.perf_counter()
        run_pipeline(registry(), cfg, ["shard"])
        shard_s = time.perf_counter() - start
        clips = read_clips(cfg.workdir / "shard").to_pylist()
        shard_read, n = _read_from_shards(cfg.workdir / "shard")
        file_read = _read_from_files(root, clips)
        print(json.dumps({
            "videos": len(videos), "clips": len(clips), "workers": args.workers,
            "shard_stage": {"clips_per_s": round(len(clips) / shard_s, 2), "seconds": round(shard_s, 2)},
            "baseline_decord_decode": {"frames_per_s": round(decord_fps, 1)},
            "read_16x224": {"from_shards_clips_per_s": round(shard_read, 2), "from_files_clips_per_s": round(file_read, 2),
                            "ratio": round(shard_read / file_read, 3)},
            "shard_bytes": int(sum(p.stat().st_size for p in shard_paths(cfg.workdir / "shard"))),
            "source_bytes": int(sum(p.stat().st_size for p in videos)),
        }, indent=2))
        assert n == len(clips)


if __name__ == "__main__":
    main()
