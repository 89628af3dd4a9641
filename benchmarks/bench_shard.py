"""Shard-stage throughput, and reading clips back from shards versus from the original files.

On the same videos, each repeat measures back to back:
  * shard stage clips/s (probe + cut + re-encode + pack), next to plain decord decoding frames/s of the sources;
  * clips/s of decoding 16 frames at 224 px from the shards, next to decoding the same clips from the sources.
Target: reading from shards at least as fast as from the original files (ratio >= 1 in every repeat).
Writes benchmarks/results/shard.json (benchmarks/record.py) and prints it.

    python benchmarks/bench_shard.py [--clips-per-class 8] [--workers 2] [--repeats 3]
"""
from __future__ import annotations

import argparse
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

from record import cell, describe_machine, save, spread

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


def measure(root: Path, workdir: Path, workers: int) -> dict[str, float]:
    """One repeat: every figure, on a fresh workdir."""
    cfg = load_config(tree={
        "workdir": str(workdir),
        "data": {"source": {"kind": "csv", "root": str(root), "annotations": str(root / SAMPLES_CSV)}},
        "runtime": {"workers": workers, "progress": False}, "shard": {"short_side": 320}})
    decord_fps = _decode_sources(sorted(root.rglob("*.mp4")))
    start = time.perf_counter()
    run_pipeline(registry(), cfg, ["shard"])
    shard_s = time.perf_counter() - start
    clips = read_clips(cfg.workdir / "shard").to_pylist()
    shard_read, n = _read_from_shards(cfg.workdir / "shard")
    if n != len(clips):
        raise RuntimeError(f"read {n} clips back from the shards, the clip table lists {len(clips)}")
    file_read = _read_from_files(root, clips)
    return {"shard_stage_clips_per_s": len(clips) / shard_s, "decord_frames_per_s": decord_fps,
            "from_shards_clips_per_s": shard_read, "from_files_clips_per_s": file_read,
            "shards_over_files": shard_read / file_read, "clips": len(clips),
            "shard_bytes": sum(p.stat().st_size for p in shard_paths(cfg.workdir / "shard"))}


def render_markdown(doc: dict) -> str:
    f, s = doc["figures"], doc["settings"]
    return "\n".join([
        f"`python benchmarks/bench_shard.py` ({s['videos']} videos: generated 320x240 clips + 3 real clips, "
        f"{s['workers']} workers; {describe_machine(doc)}):",
        "",
        "| shard stage | plain decord decode | read 16x224 from shards | same clips from the source files | shards / files |",
        "|---|---|---|---|---|",
        f"| {cell(f['shard_stage_clips_per_s'])} clips/s | {cell(f['decord_frames_per_s'], '{:.0f}')} frames/s | "
        f"{cell(f['from_shards_clips_per_s'])} clips/s | {cell(f['from_files_clips_per_s'])} clips/s | "
        f"{cell(f['shards_over_files'], '{:.2f}')}x |",
    ])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips-per-class", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="result JSON (default benchmarks/results/shard.json)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "samples"
        write_samples(root, SampleSettings(clips_per_class=args.clips_per_class, width=320, height=240, frames=64))
        videos = sorted(root.rglob("*.mp4"))
        runs = [measure(root, Path(tmp) / f"work{i}", args.workers) for i in range(args.repeats)]
        figures = {key: spread([run[key] for run in runs]) for key in runs[0] if key not in ("clips", "shard_bytes")}
        settings = {"videos": len(videos), "clips": runs[0]["clips"], "workers": args.workers,
                    "repeats": args.repeats, "frames": FRAMES, "size": SIZE, "shard_bytes": runs[0]["shard_bytes"],
                    "source_bytes": sum(p.stat().st_size for p in videos)}
    save("shard", settings, figures, args.out)


if __name__ == "__main__":
    main()
