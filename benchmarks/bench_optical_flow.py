"""Optical-flow backends: speed per core and how well their action boxes agree with TV-L1's, in one run.

    python benchmarks/bench_optical_flow.py [--out DIR] [--short-side 128] [--frames 48] [--speed-pairs 6]

Prints JSON: frames/s per core (OpenCV on one thread) of every backend at 128, 224 and 320 px short side,
and for the stage's box settings the mean IoU of each backend's union box with TV-L1's (and with the true box
of the generated clips) next to its speed ratio over TV-L1. The goal is DIS's speed with TV-L1's boxes.
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from pipeline.samples import SampleSettings, read_true_boxes, write_samples
from pipeline.video.decode import decode_frames, resize_frames
from stages.optical_flow.boxes import action_area, box_iou
from stages.optical_flow.config import FLOW_BACKENDS, OpticalFlowConfig
from stages.optical_flow.flow_fields import compute_flows, gray_frames, make_flow

BACKENDS = FLOW_BACKENDS.names()

SPEED_SIDES = (128, 224, 320)


def _flow_fn(backend: str, cfg: OpticalFlowConfig):
    return make_flow(cfg.model_copy(update={"backend": backend}))


def frames_per_second(backend: str, gray: np.ndarray, cfg: OpticalFlowConfig) -> float:
    flow = _flow_fn(backend, cfg)
    flow(gray[0], gray[1])  # first call allocates
    start = time.perf_counter()
    compute_flows(gray, flow, 1e9)
    return (len(gray) - 1) / (time.perf_counter() - start)


def speed_table(video: Path, pairs: int, cfg: OpticalFlowConfig) -> dict[str, dict[str, float]]:
    rgb = decode_frames(video.read_bytes(), list(range(pairs + 1)))
    gray = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in rgb])
    return {b: {str(side): round(frames_per_second(b, resize_frames(gray, side), cfg), 2) for side in SPEED_SIDES}
            for b in BACKENDS}


def agreement(videos: list[Path], frames: int, cfg: OpticalFlowConfig) -> dict[str, dict[str, float]]:
    """Boxes of every backend on the same clips (first ``frames`` frames) at the stage's settings."""
    boxes: dict[str, list] = {b: [] for b in BACKENDS}
    seconds = dict.fromkeys(BACKENDS, 0.0)
    pairs, truth = 0, []
    for video in videos:
        rgb = decode_frames(video.read_bytes())[:frames:cfg.frame_step]
        gray = gray_frames(rgb, cfg.short_side)
        scale = min(gray.shape[1:3]) / cfg.reference_short_side
        pairs += len(gray) - 1
        for backend in BACKENDS:
            start = time.perf_counter()
            flows = compute_flows(gray, _flow_fn(backend, cfg), cfg.flow_bound_px * scale * cfg.frame_step)
            seconds[backend] += time.perf_counter() - start
            boxes[backend].append(action_area(flows, cfg.boxes, scale, cfg.frame_step).box)
        if video.with_name(video.stem + ".boxes.json").is_file():
            true = np.array(read_true_boxes(video)["boxes"])[:frames]
            truth.append((len(boxes["tvl1"]) - 1, (*true[:, :2].min(0), *true[:, 2:].max(0))))
    out = {}
    for backend in BACKENDS:
        out[backend] = {
            "frames_per_s": round(pairs / seconds[backend], 2),
            "speed_ratio_vs_tvl1": round(seconds["tvl1"] / seconds[backend], 1),
            "iou_vs_tvl1": round(float(np.mean([box_iou(a, b) for a, b in zip(boxes[backend], boxes["tvl1"])])), 3),
            "iou_vs_truth": round(float(np.mean([box_iou(boxes[backend][i], t) for i, t in truth])), 3),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, help="where to write the sample clips (a temporary folder by default)")
    parser.add_argument("--short-side", type=int, default=OpticalFlowConfig().short_side)
    parser.add_argument("--frames", type=int, default=48, help="frames per clip for the agreement run")
    parser.add_argument("--speed-pairs", type=int, default=6, help="frame pairs timed per backend and size")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    cfg = OpticalFlowConfig(short_side=args.short_side)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.out or Path(tmp)
        write_samples(root, SampleSettings(clips_per_class=1, frames=32))
        videos = sorted(root.glob("synthetic/*/*.mp4")) + sorted(root.glob("real/*.mp4"))
        speed = speed_table(root / "real" / "vtest.mp4", args.speed_pairs, cfg)
        agree = agreement(videos, args.frames, cfg)
    print(json.dumps({
        "machine": {"cpu": platform.processor() or platform.machine(), "opencv": cv2.__version__, "threads": 1},
        "frames_per_s_per_core": speed,
        "agreement": {"short_side": cfg.short_side, "frame_step": cfg.frame_step, "clips": len(videos),
                      "frames_per_clip": args.frames, "dis": f"{cfg.dis_preset}, finest scale {cfg.dis_finest_scale}",
                      "window": cfg.boxes.window, "backends": agree},
    }, indent=2))


if __name__ == "__main__":
    main()
