"""Dense optical flow with OpenCV on small grayscale frames: TV-L1 (the reference), DIS, Farneback."""
from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

from pipeline.video.decode import resize_frames
from stages.optical_flow.config import FLOW_BACKENDS, OpticalFlowConfig

FlowFn = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (prev, next) uint8 gray -> (H, W, 2) float32

DIS_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}


def make_flow(cfg: OpticalFlowConfig) -> FlowFn:
    """The flow function of ``cfg.backend``; its OpenCV object is created once and reused for every pair."""
    return FLOW_BACKENDS.load(cfg.backend)(cfg)


def tvl1_flow(cfg: OpticalFlowConfig) -> FlowFn:
    if not hasattr(cv2, "optflow"):
        raise RuntimeError("optical_flow.backend=tvl1 needs cv2.optflow: install opencv-contrib-python "
                           "(not opencv-python), or choose backend dis")
    tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()
    return lambda prev, nxt: tvl1.calc(prev, nxt, None)


def dis_flow(cfg: OpticalFlowConfig) -> FlowFn:
    """DIS at ``cfg.dis_preset``; ``cfg.dis_finest_scale`` overrides the preset's finest pyramid level (0: full
    resolution; the presets stop at level 1 or 2, which blurs motion boundaries on the small frames used here)."""
    dis = cv2.DISOpticalFlow_create(DIS_PRESETS[cfg.dis_preset])
    if cfg.dis_finest_scale is not None:
        dis.setFinestScale(cfg.dis_finest_scale)
    return lambda prev, nxt: dis.calc(prev, nxt, None)


def farneback_flow(cfg: OpticalFlowConfig) -> FlowFn:
    return lambda prev, nxt: cv2.calcOpticalFlowFarneback(prev, nxt, None, pyr_scale=0.5, levels=3, winsize=15,
                                                          iterations=3, poly_n=5, poly_sigma=1.2, flags=0)


def gray_frames(rgb: np.ndarray, short_side: int) -> np.ndarray:
    """(T, H, W, 3) RGB -> (T, h, w) uint8 gray with the short side at ``short_side`` (never upscaled)."""
    gray = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in rgb])
    return resize_frames(gray, min(short_side, min(gray.shape[1:3])))


def compute_flows(gray: np.ndarray, flow: FlowFn, bound: float) -> np.ndarray:
    """Flow between consecutive frames, clipped to +-``bound`` px: (T-1, H, W, 2) float32."""
    out = np.empty((max(0, len(gray) - 1), *gray.shape[1:3], 2), np.float32)
    for i in range(len(out)):
        np.clip(flow(gray[i], gray[i + 1]), -bound, bound, out=out[i])
    return out
