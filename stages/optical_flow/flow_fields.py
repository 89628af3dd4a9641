"""Dense optical flow with OpenCV on small grayscale frames: TV-L1 (the reference), DIS, Farneback."""
from __future__ import annotations

from typing import Callable, Protocol, runtime_checkable

import cv2
import numpy as np

from pipeline.video.decode import decode_frames, resize_frames
from stages.optical_flow.config import FLOW_BACKENDS, OpticalFlowConfig

FlowFn = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (prev, next) uint8 gray -> (H, W, 2) float32


@runtime_checkable
class ClipFlow(Protocol):
    """A backend that reads the flow from the encoded clip itself (``mv``) instead of pairs of decoded frames."""

    def clip_flows(self, mp4: bytes, frames: list[int]) -> np.ndarray:
        """Flow from each of ``frames`` to the next, (T-1, h, w, 2) float32 at ``optical_flow.short_side``."""
        ...

DIS_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}


def make_flow(cfg: OpticalFlowConfig) -> FlowFn | ClipFlow:
    """The flow function (or clip backend) of ``cfg.backend``; its OpenCV object is created once and reused for every
    pair."""
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


def clip_flows(mp4: bytes, frames: list[int], cfg: OpticalFlowConfig, flow: FlowFn | ClipFlow
               ) -> tuple[np.ndarray | None, np.ndarray]:
    """The decoded RGB ``frames`` of a clip (None when the backend needs no pixels) and the flow between consecutive
    ones at ``cfg.short_side``, clipped to the flow bound."""
    if isinstance(flow, ClipFlow):
        flows = flow.clip_flows(mp4, frames)
        bound = flow_bound(cfg, flows.shape[1:3])
        return None, np.clip(flows, -bound, bound, out=flows)
    rgb = decode_frames(mp4, frames)
    return rgb, pixel_flows(rgb, cfg, flow)


def pixel_flows(rgb: np.ndarray, cfg: OpticalFlowConfig, flow: FlowFn) -> np.ndarray:
    """Flow between consecutive decoded frames ``(T, H, W, 3)``, on grey frames at ``cfg.short_side``."""
    gray = gray_frames(rgb, cfg.short_side)
    return compute_flows(gray, flow, flow_bound(cfg, gray.shape[1:3]))


def flow_bound(cfg: OpticalFlowConfig, size: tuple[int, ...]) -> float:
    """``flow_bound_px`` (per source frame, at the reference size) at the flow resolution ``size`` and frame step."""
    return cfg.flow_bound_px * min(size) / cfg.reference_short_side * cfg.frame_step
