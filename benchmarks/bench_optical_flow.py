"""Optical-flow backends: speed per core and how well their action boxes agree with TV-L1's, in one run.

    python benchmarks/bench_optical_flow.py [--samples DIR] [--short-side 128] [--frames 48] [--speed-pairs 6]
                                            [--repeats 3]

Measures frames/s per core (OpenCV on one thread) of every backend at 128, 224 and 320 px short side, each
repeat timing every backend back to back, with its speed ratio over TV-L1 at the stage's short side within each
repeat; and, for the stage's box settings, the mean IoU of each backend's union box with TV-L1's (and with the
true box of the generated clips), which is deterministic and computed once. The goal is DIS's speed with TV-L1's
boxes. A clip backend (`mv`: the encoder's motion vectors) is timed decoding a clip re-encoded at each size with
the shard stage's settings, since decoding is its whole cost. Writes benchmarks/results/optical_flow.json
(benchmarks/record.py) and prints it.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from pipeline.samples import SampleSettings, read_true_boxes, write_samples
from pipeline.video.decode import decode_frames, resize_frames
from pipeline.video.encode import H264Writer
from pipeline.video.geometry import scaled_size
from stages.optical_flow.boxes import box_iou
from stages.optical_flow.config import FLOW_BACKENDS, OpticalFlowConfig
from stages.optical_flow.flow_fields import ClipFlow, clip_flows, compute_flows, make_flow
from stages.optical_flow.stage import area_of
from stages.shard.config import ShardConfig

from record import cell, describe_machine, save, spread

BACKENDS = FLOW_BACKENDS.names()
CLIP_BACKENDS = tuple(b for b in BACKENDS if isinstance(make_flow(OpticalFlowConfig(backend=b)), ClipFlow))
CLIP_SPEED_FRAMES = 48
PAN_PX = 1.5  # camera pan of the second set of generated clips, px per frame at their 160 px width

SPEED_SIDES = (128, 224, 320)


def _flow_fn(backend: str, cfg: OpticalFlowConfig):
    return make_flow(cfg.model_copy(update={"backend": backend}))


def frames_per_second(backend: str, gray: np.ndarray, cfg: OpticalFlowConfig) -> float:
    flow = _flow_fn(backend, cfg)
    flow(gray[0], gray[1])  # first call allocates
    start = time.perf_counter()
    compute_flows(gray, flow, 1e9)
    return (len(gray) - 1) / (time.perf_counter() - start)


def clip_frames_per_second(backend: str, mp4: bytes, frames: int, cfg: OpticalFlowConfig) -> float:
    """A clip backend's frames/s: decoding the encoded clip is its whole cost, so it is timed with it."""
    flow = _flow_fn(backend, cfg.model_copy(update={"short_side": 4096}))  # the clip's own size, as timed
    start = time.perf_counter()
    flow.clip_flows(mp4, list(range(frames)))
    return (frames - 1) / (time.perf_counter() - start)


def _encoded(rgb: np.ndarray, side: int, path: Path) -> bytes:
    """The frames re-encoded at short side ``side`` as the shard stage stores clips (its default GOP and crf)."""
    width, height = scaled_size(rgb.shape[2], rgb.shape[1], side)
    shard = ShardConfig()
    writer = H264Writer(path, width, height, fps=25, gop=shard.gop, crf=shard.crf, preset=shard.preset)
    for frame in rgb:
        writer.write(cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA))
    writer.close()
    return path.read_bytes()


def speed_table(video: Path, pairs: int, clip_frames: int, cfg: OpticalFlowConfig, tmp: Path
                ) -> dict[str, dict[str, float]]:
    """Frames/s of every backend at every size: one repeat. Pixel backends time the flow of ``pairs`` decoded
    pairs; clip backends decode and read ``clip_frames`` frames re-encoded at that size."""
    rgb = decode_frames(video.read_bytes(), list(range(max(pairs + 1, clip_frames))))
    gray = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in rgb[:pairs + 1]])
    clips = {side: _encoded(rgb[:clip_frames], side, tmp / f"speed-{side}.mp4") for side in SPEED_SIDES}
    return {b: {str(side): clip_frames_per_second(b, clips[side], clip_frames, cfg) if b in CLIP_BACKENDS
                else frames_per_second(b, resize_frames(gray, side), cfg) for side in SPEED_SIDES}
            for b in BACKENDS}


def agreement(videos: list[Path], frames: int, cfg: OpticalFlowConfig) -> dict[str, dict[str, float]]:
    """Boxes of every backend on the same clips (first ``frames`` frames) at the stage's settings."""
    boxes: dict[str, list] = {b: [] for b in BACKENDS}
    truth = []
    for video in videos:
        mp4 = video.read_bytes()
        indices = list(range(min(frames, len(decode_frames(mp4)))))[::cfg.frame_step]
        for backend in BACKENDS:
            _, flows = clip_flows(mp4, indices, cfg, _flow_fn(backend, cfg))
            boxes[backend].append(area_of(flows, cfg).box)
        if video.with_name(video.stem + ".boxes.json").is_file():
            true = np.array(read_true_boxes(video)["boxes"])[:frames]
            truth.append((len(boxes["tvl1"]) - 1, (*true[:, :2].min(0), *true[:, 2:].max(0))))
    return {backend: {
        "iou_vs_tvl1": round(float(np.mean([box_iou(a, b) for a, b in zip(boxes[backend], boxes["tvl1"])])), 3),
        "iou_vs_truth": round(float(np.mean([box_iou(boxes[backend][i], t) for i, t in truth])), 3),
    } for backend in BACKENDS}


def render_markdown(doc: dict) -> str:
    f, s = doc["figures"], doc["settings"]
    sides = " / ".join(str(side) for side in s["speed_sides"])
    lines = [
        f"`python benchmarks/bench_optical_flow.py` (one OpenCV thread; speed on {s['speed_pairs']} frame pairs of a "
        f"real clip, boxes on {s['clips']} clips of {s['frames_per_clip']} frames at {s['short_side']} px; "
        f"{describe_machine(doc)}):",
        "",
        f"| backend | frames/s per core at {sides} px | speed vs TV-L1 at {s['short_side']} px | box IoU vs TV-L1 | "
        f"box IoU vs ground truth | same, camera panning {s['pan_px_per_frame']} px/frame |",
        "|---|---|---|---|---|---|",
    ]
    for backend, entry in f["backends"].items():
        speeds = " / ".join(cell(entry["frames_per_s"][str(side)]) for side in s["speed_sides"])
        name = f"{backend} (default)" if backend == s["default_backend"] else backend
        name += " ¹" if backend in s.get("clip_backends", ()) else ""
        lines.append(f"| {name} | {speeds} | {cell(entry['speed_vs_tvl1'], '{:.3g}')}x | "
                     f"{entry['iou_vs_tvl1']:.2f} | {entry['iou_vs_truth']:.2f} | {entry['iou_vs_truth_pan']:.2f} |")
    if s.get("clip_backends"):
        lines += ["", f"¹ reads the H.264 motion vectors while decoding the clip: its speed includes decoding "
                      f"({s['clip_speed_frames']} frames of the same real clip re-encoded at each size with the shard "
                      "stage's settings), the others' excludes it; its boxes come from the encoded clips."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=Path, help="where to write the sample clips (a temporary folder by default)")
    parser.add_argument("--short-side", type=int, default=OpticalFlowConfig().short_side)
    parser.add_argument("--frames", type=int, default=48, help="frames per clip for the agreement run")
    parser.add_argument("--speed-pairs", type=int, default=6, help="frame pairs timed per backend and size")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="result JSON (default benchmarks/results/optical_flow.json)")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    cfg = OpticalFlowConfig(short_side=args.short_side)
    side = str(min(SPEED_SIDES, key=lambda s: abs(s - cfg.short_side)))
    with tempfile.TemporaryDirectory() as tmp:
        root = args.samples or Path(tmp)
        write_samples(root, SampleSettings(clips_per_class=1, frames=32))
        write_samples(root / "pan", SampleSettings(clips_per_class=1, frames=32, pan_px_per_frame=PAN_PX, real=False))
        videos = sorted(root.glob("synthetic/*/*.mp4")) + sorted(root.glob("real/*.mp4"))
        speeds = [speed_table(root / "real" / "vtest.mp4", args.speed_pairs, CLIP_SPEED_FRAMES, cfg, Path(tmp))
                  for _ in range(args.repeats)]
        agree = agreement(videos, args.frames, cfg)
        panned = agreement(sorted((root / "pan").glob("synthetic/*/*.mp4")), args.frames, cfg)
    backends = {b: {"frames_per_s": {str(n): spread([run[b][str(n)] for run in speeds]) for n in SPEED_SIDES},
                    "speed_vs_tvl1": spread([run[b][side] / run["tvl1"][side] for run in speeds])} | agree[b]
                | {"iou_vs_truth_pan": panned[b]["iou_vs_truth"]} for b in BACKENDS}
    settings = {"repeats": args.repeats, "speed_sides": list(SPEED_SIDES), "speed_pairs": args.speed_pairs,
                "short_side": cfg.short_side, "frame_step": cfg.frame_step, "clips": len(videos),
                "frames_per_clip": args.frames, "dis": f"{cfg.dis_preset}, finest scale {cfg.dis_finest_scale}",
                "window": cfg.boxes.window, "default_backend": cfg.backend, "clip_backends": list(CLIP_BACKENDS),
                "clip_speed_frames": CLIP_SPEED_FRAMES, "pan_px_per_frame": PAN_PX}
    save("optical_flow", settings, {"backends": backends}, args.out, opencv=cv2.__version__, opencv_threads=1)


if __name__ == "__main__":
    main()
