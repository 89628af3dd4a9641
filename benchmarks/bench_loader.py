"""Training samples per second per core of the real pre-training loader, against the decode limit.

The loader under test is the pretrain stage's: shards (tar of re-encoded H.264 clips) + action areas + caption
embeddings -> decoded, cropped, flipped clips with action tokens, tube masks and their token indices, at the ViT-B
recipe shapes (16 frames, 224 px). One process, one thread (``loader.workers: 0``), so the figure is per core.
Each repeat measures, on the same generated videos and back to back:

* ``baseline``: the path before issue 13 -- shards at the recipe's 320 px short side and 30 fps, 16 frames at
  stride 4 (a 64-frame window), its OpenCV crop/resize/flip (:func:`crop_flip_before`), frames normalised to
  float32 channels-first in the worker;
* ``uint8``: the same shards and sampling through today's loader (torch's antialiased resize, uint8 frames
  channels-last, normalised on the GPU instead);
* ``training_rate``: shards written at the training frame rate and size (``shard.fps: 7.5``, ``short_side: 256``,
  ``gop: 8``), 16 consecutive frames (stride 1), uint8; with ``repeated_views`` 1 and k > 1;
* ``decode_limit_*``: the decoder alone on the same bytes and the same frame indices the loader drew -- the most a
  loader of those shards could deliver.

Writes benchmarks/results/loader.json (benchmarks/record.py) and prints it; ``loader_check(workers)`` is the
all-cores figure ``benchmarks/gpu_check.py`` takes on a GPU machine.

    python benchmarks/bench_loader.py [--videos 16] [--steps 12] [--repeats 3]
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import cv2
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fils_model.config import ModelConfig  # noqa: E402
from fils_model.video_input import normalise_video  # noqa: E402
from pipeline.clips import stream  # noqa: E402
from pipeline.clips.batches import ClipBatches  # noqa: E402
from pipeline.clips.config import LoaderConfig  # noqa: E402
from pipeline.clips.stream import Layout, StreamSettings, seed_of  # noqa: E402
from pipeline.samples.synthetic import DEFAULT_CLASSES, make_clip  # noqa: E402
from pipeline.shards import ShardItem, write_shard  # noqa: E402
from pipeline.video.clip_config import SamplingConfig  # noqa: E402
from pipeline.video.decode import decode_frames  # noqa: E402
from pipeline.video.encode import H264Writer  # noqa: E402
from pipeline.video.ingest import ClipRequest, EncodeSettings, encode_clips  # noqa: E402
from pipeline.video.transforms import CropFlip, frame_indices  # noqa: E402
from stages.captions.tables import EMBEDDING_SCHEMA, EMBEDDINGS_FILE, write_parquet  # noqa: E402
from stages.optical_flow.tables import ACTION_AREAS_FILE, write_action_areas  # noqa: E402
from stages.pretrain.config import PretrainDataConfig  # noqa: E402
from stages.pretrain.samples import pretrain_stream  # noqa: E402
from stages.pretrain.side_tables import load_tables  # noqa: E402

from record import cell, describe_machine, save, significant, spread  # noqa: E402

MODEL = ModelConfig(size="base")  # ViT-B/16, 16 frames at 224 px: the recipe shapes the loader feeds
SOURCE_FPS, SECONDS, WIDTH, HEIGHT = 30.0, 4.0, 426, 320
RECIPE_SHARDS = EncodeSettings(short_side=320, fps=30.0, gop=16, crf=23, preset="veryfast")
TRAINING_RATE_SHARDS = EncodeSettings(short_side=256, fps=7.5, gop=8, crf=23, preset="veryfast")
STRIDE = 4  # SOURCE_FPS / training fps
GPU_CLIPS_PER_S = 500.0  # ViT-B FILS step on one H100 at ~40 % MFU (issue 13's estimate; gpu_check.py measures it)
BATCH = 8


@dataclass(frozen=True)
class Dataset:
    root: Path
    shards: tuple[str, ...]
    keys: tuple[str, ...]


def write_sources(root: Path, videos: int) -> list[Path]:
    """Generated moving-object videos at the source rate, near-lossless (what the shard stage would ingest)."""
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(videos):
        clip = make_clip(DEFAULT_CLASSES[i % len(DEFAULT_CLASSES)], seed=i, width=WIDTH, height=HEIGHT,
                         frames=int(SECONDS * SOURCE_FPS), pan_px_per_frame=1.0)
        path = root / f"v{i:03d}.mp4"
        writer = H264Writer(path, WIDTH, HEIGHT, SOURCE_FPS, gop=30, crf=12, preset="veryfast")
        for frame in clip.frames:
            writer.write(frame)
        writer.close()
        paths.append(path)
    return paths


def write_dataset(root: Path, sources: list[Path], settings: EncodeSettings, shards: int = 2) -> Dataset:
    """The shard stage's encoding of ``sources`` with ``settings``, packed into ``shards`` shards (at least one per
    loader worker), plus the side tables the pretrain loader joins (a unit caption embedding and an action box per
    clip)."""
    clips_dir = root / "clips"
    clips_dir.mkdir(parents=True, exist_ok=True)
    items = []
    for source in sources:
        _, clips, failures = encode_clips(source, [ClipRequest(source.stem)], clips_dir, settings, 0.5)
        if failures:
            raise RuntimeError(f"{source}: {failures}")
        clip = clips[0]
        items.append(ShardItem(clip.key, clip.path, {"num_frames": clip.frames, "fps": clip.fps}))
    paths = []
    for index in range(shards):
        path = root / f"train-{index:06d}.tar"
        write_shard(path, items[index::shards])
        paths.append(str(path))
    keys = [item.key for item in items]
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(len(keys), MODEL.text_dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    import pyarrow as pa

    (root / "captions").mkdir(exist_ok=True)
    write_parquet(pa.table({"key": keys, "embedding": list(vectors), "encoder_id": ["bench"] * len(keys),
                            "dim": [MODEL.text_dim] * len(keys)}, schema=EMBEDDING_SCHEMA),
                  root / "captions" / EMBEDDINGS_FILE)
    (root / "optical_flow").mkdir(exist_ok=True)
    write_action_areas([{"key": k, "status": "ok", "reason": None, "backend": "dis", "x1": 0.2, "y1": 0.2, "x2": 0.7,
                         "y2": 0.8, "motion": 1.0, "frame_indices": [], "frame_boxes": []} for k in keys],
                       root / "optical_flow" / ACTION_AREAS_FILE)
    return Dataset(root, tuple(paths), tuple(keys))


def stream_settings(data: Dataset, stride: int, views: int) -> StreamSettings:
    cfg = PretrainDataConfig(sampling=SamplingConfig(mode="stride", stride=stride), repeated_views=views,
                             shuffle_buffer=4, interleave_shards=1, decode_backend="decord")
    return pretrain_stream(data.shards, cfg, MODEL, load_tables(data.root / "optical_flow", data.root / "captions"),
                           local_batch=BATCH, segment_steps=10**6, decode_timeout_s=60)


def crop_flip_before(frames: np.ndarray, crop: CropFlip, size: int) -> np.ndarray:
    """The crop/resize/flip of the loader before issue 13 (OpenCV per frame, area filter when shrinking, a stacking
    copy and a copy through a negative-stride view to flip), for the baseline."""
    cut = frames[:, crop.y1 : crop.y2, crop.x1 : crop.x2]
    shrink = cut.shape[1] > size and cut.shape[2] > size
    interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    out = np.stack([cv2.resize(f, (size, size), interpolation=interp) for f in cut])
    return np.ascontiguousarray(out[:, :, ::-1]) if crop.flip else out


def loader_rate(data: Dataset, stride: int, views: int, steps: int, workers: int = 0,
                before: bool = False) -> dict[str, float]:
    """Training samples/s and decoded clips/s of the pretrain loader over ``steps`` batches (after one warm-up);
    ``before``: with the crop/flip and the float32 channels-first output of the loader before issue 13."""
    settings = stream_settings(data, stride, views)
    with tempfile.TemporaryDirectory() as state, contextlib.ExitStack() as patches:
        if before:
            patches.enter_context(mock.patch.object(stream, "apply_crop_flip", crop_flip_before))
        batches = iter(ClipBatches(settings, Layout(0, 1, max(1, workers)), 0, steps + 1, LoaderConfig(workers=workers),
                                   Path(state)))
        next(batches)
        start = time.perf_counter()
        for batch in batches:
            if before:  # what the worker did per clip: normalise to float32 and lay it out channels first
                normalise_video(batch["video"]).contiguous()
        seconds = time.perf_counter() - start
    return {"samples_per_s": steps * BATCH / seconds, "clips_per_s": steps * BATCH / views / seconds}


def decode_limit(data: Dataset, stride: int, samples: int) -> float:
    """Samples/s of the decoder alone: the clips of the shards in turn, each with frame indices drawn as the
    loader draws them, decoded from the same bytes (no tar reading, crops, tables or masks)."""
    from pipeline.shards import iter_shard

    clips = [s for shard in data.shards for s in iter_shard(Path(shard))]
    sampling = SamplingConfig(mode="stride", stride=stride)
    rng = np.random.default_rng(seed_of(0, 1))
    jobs = [(clip.mp4, frame_indices(int(clip.meta["num_frames"]), MODEL.num_frames, sampling, rng))
            for clip in (clips[i % len(clips)] for i in range(samples))]
    start = time.perf_counter()
    for mp4, indices in jobs:
        decode_frames(mp4, indices, "decord")
    return samples / (time.perf_counter() - start)


def one_repeat(recipe: Dataset, training_rate: Dataset, steps: int, views: tuple[int, ...]) -> dict[str, float]:
    samples = steps * BATCH
    out = {
        "baseline": loader_rate(recipe, STRIDE, 1, steps, before=True)["samples_per_s"],
        "uint8": loader_rate(recipe, STRIDE, 1, steps)["samples_per_s"],
        "decode_limit_recipe": decode_limit(recipe, STRIDE, samples),
        "decode_limit_training_rate": decode_limit(training_rate, 1, samples),
    }
    for k in views:
        rate = loader_rate(training_rate, 1, k, steps)
        out[f"training_rate_k{k}"] = rate["samples_per_s"]
        out[f"training_rate_k{k}_clips"] = rate["clips_per_s"]
    out["speedup_k1"] = out["training_rate_k1"] / out["baseline"]
    out["of_decode_limit_k1"] = out["training_rate_k1"] / out["decode_limit_training_rate"]
    out["baseline_of_decode_limit"] = out["baseline"] / out["decode_limit_recipe"]
    return out


def build(root: Path, videos: int, shards: int = 2) -> tuple[Dataset, Dataset]:
    sources = write_sources(root / "sources", videos)
    return (write_dataset(root / "recipe", sources, RECIPE_SHARDS, shards),
            write_dataset(root / "training_rate", sources, TRAINING_RATE_SHARDS, shards))


def loader_check(workers: int, videos: int | None = None, steps: int | None = None) -> dict[str, Any]:
    """All-cores loader throughput on training-rate shards (k = 1 and 2), for benchmarks/gpu_check.py: one shard
    per worker (a video each unless ``videos`` says more), 20 batches per worker unless ``steps`` says."""
    with tempfile.TemporaryDirectory() as tmp:
        sources = write_sources(Path(tmp) / "sources", max(videos or workers, 2))
        data = write_dataset(Path(tmp) / "training_rate", sources, TRAINING_RATE_SHARDS, shards=max(2, workers))
        steps = steps or 20 * workers
        return {"workers": workers, "samples_per_s": loader_rate(data, 1, 1, steps, workers)["samples_per_s"],
                "samples_per_s_k2": loader_rate(data, 1, 2, steps, workers)["samples_per_s"]}


def render_markdown(doc: dict[str, Any]) -> str:
    s, f = doc["settings"], doc["figures"]
    recipe = "320 px, 30 fps, GOP 16; 16 frames at stride 4"
    rate = "256 px, 7.5 fps, GOP 8; 16 consecutive frames"

    def row(name: str, label: str, shards: str, limit: str, clips: bool = False) -> str:
        samples = cell(f[name]) + (f" ({cell(f[name + '_clips'])} decoded clips/s)" if clips else "")
        ratio = f[name]["median"] / f[limit]["median"]
        return (f"| {label} | {shards} | {samples} | {cell(f[limit])} | {ratio:.2f} | "
                f"{significant(s['gpu_clips_per_s'] / f[name]['median'])} |")

    lines = [
        f"`python benchmarks/bench_loader.py` (the pretrain loader at the ViT-B recipe shapes, 16 x 224 px, batches of "
        f"{s['batch']}, one process and thread; {s['videos']} videos, {s['source']}; {describe_machine(doc)}). "
        "Training samples/s per core, against the decoder alone on the same bytes and frame indices, and the cores "
        f"one GPU would need at {s['gpu_clips_per_s']:g} clips/s (a ViT-B FILS step on an H100 at ~40 % MFU):",
        "",
        "| loader path | shards; frames per sample | training samples/s per core | decode limit | of the limit "
        "| cores per GPU |",
        "|---|---|---|---|---|---|",
        row("baseline", "before (float32 normalised in the worker)", recipe, "decode_limit_recipe"),
        row("uint8", "today's (antialiased resize, uint8 to the device)", recipe, "decode_limit_recipe"),
        *(row(f"training_rate_k{k}", f"training-rate shards, repeated_views {k}", rate, "decode_limit_training_rate",
              clips=k > 1) for k in s["views"]),
        "",
        f"Training-rate shards at k = 1: **{cell(f['speedup_k1'], '{:.2f}')}x** the samples/s of the path before "
        f"(aim ≥ 2) and **{cell(f['of_decode_limit_k1'], '{:.2f}')}** of their decode limit (aim ≥ 0.8).",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=16)
    parser.add_argument("--steps", type=int, default=12, help="timed batches of 8 samples per measurement")
    parser.add_argument("--views", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory() as tmp:
        recipe, training_rate = build(Path(tmp), args.videos)
        runs = [one_repeat(recipe, training_rate, args.steps, tuple(args.views)) for _ in range(args.repeats)]
    figures: dict[str, Any] = {name: spread([run[name] for run in runs]) for name in runs[0]}
    figures["projected_cores_per_gpu"] = {
        name: GPU_CLIPS_PER_S / figures[name]["median"] for name in ("baseline", *(f"training_rate_k{k}"
                                                                                   for k in args.views))}
    figures["targets"] = {"speedup_k1 >= 2": figures["speedup_k1"]["min"] >= 2,
                          "of_decode_limit_k1 >= 0.8": figures["of_decode_limit_k1"]["min"] >= 0.8}
    settings = vars(args) | {"batch": BATCH, "model": "ViT-B/16 16x224", "stride": STRIDE,
                             "recipe_shards": RECIPE_SHARDS.__dict__, "training_rate_shards": TRAINING_RATE_SHARDS.__dict__,
                             "source": f"{WIDTH}x{HEIGHT}, {SOURCE_FPS:g} fps, {SECONDS:g} s, generated",
                             "gpu_clips_per_s": GPU_CLIPS_PER_S}
    save("loader", settings, figures, torch_threads=1, opencv_threads=1)

if __name__ == "__main__":
    main()
