"""MOFO's unsupervised action area: motion boundaries of the flow -> one box per frame -> cleaning -> union.

Motion boundaries (spatial derivatives of u and v) are zero wherever the flow is uniform, so a panning camera
leaves no trace while the edges of an object that moves relative to the background do. Summing the flow over
a temporal window before differentiating (the derivative is linear, so this equals the reference's sum of
derivatives) accumulates an object's outline along its path.

Deviations from the reference scripts, each to remove an artefact rather than change the method: a frame
without motion takes its neighbour's box instead of the centre box; a box that stays too large or too small
until the end of the clip takes the nearest good box instead of halved coordinates; only outer contours are
ranked (an inner hole cannot displace a second object); padding is not compounded across replaced frames.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from stages.optical_flow.config import BoxConfig

Box = tuple[float, float, float, float]  # x1, y1, x2, y2
Status = Literal["ok", "fallback", "failed"]
CENTRE_BOX: Box = (0.25, 0.25, 0.75, 0.75)

_PREWITT_X = np.array([[-1, 0, 1]] * 3, np.float32)
_PREWITT_Y = np.ascontiguousarray(_PREWITT_X.T)


@dataclass
class ActionArea:
    box: Box  # union over the clip, normalised to [0, 1] of the frame
    frame_boxes: np.ndarray  # (T, 4) normalised box of every flow frame (all equal to `box` on fallback)
    motion: float  # motion score: reference px per source frame
    status: Status
    reason: str = ""


def motion_maps(flows: np.ndarray, window: int, border: int) -> np.ndarray:
    """(T-1, H, W, 2) flow -> (T, H, W) motion-boundary magnitude, one map per frame (window centred on it)."""
    n = len(flows)
    ws = min(window, n)
    csum = np.concatenate([np.zeros_like(flows[:1]), np.cumsum(flows, axis=0)])
    maps = np.empty((n + 1, *flows.shape[1:3]), np.float32)
    for k in range(n + 1):
        start = min(max(k - ws // 2, 0), n - ws)
        summed = csum[start + ws] - csum[start]
        mags = [cv2.magnitude(cv2.filter2D(c, -1, _PREWITT_X), cv2.filter2D(c, -1, _PREWITT_Y))
                for c in (np.ascontiguousarray(summed[..., 0]), np.ascontiguousarray(summed[..., 1]))]
        maps[k] = (mags[0] + mags[1]) / 2
    if border > 0:
        maps[:, :border], maps[:, -border:], maps[:, :, :border], maps[:, :, -border:] = 0, 0, 0, 0
    return maps


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(image, (0, 0), sigma) if sigma > 0 else image


def frame_box(motion_map: np.ndarray, cfg: BoxConfig, scale: float) -> Box | None:
    """Pixel box of the motion in one map, or None when there is none."""
    m = _blur(motion_map, cfg.pre_blur_sigma_px * scale).copy()
    peak = float(m.max())
    if peak <= 0:
        return None
    m[m < cfg.rel_max * peak] = 0
    m[m < cfg.rel_std * float(m.std())] = 0
    strong = m > 0
    m = _blur(m, cfg.post_blur_sigma_px * scale)
    support = (m > cfg.support_frac * float(m.max())).astype(np.uint8)
    contours, _ = cv2.findContours(support, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None
    top = sorted(contours, key=cv2.contourArea, reverse=True)[: cfg.max_contours]
    centres = [c.reshape(-1, 2).mean(axis=0) for c in top]
    far = cfg.split_diag_frac * float(np.hypot(*support.shape))
    kept = [c for c, centre in zip(top, centres) if np.linalg.norm(centre - centres[0]) <= far]
    if cfg.tight:
        mask = cv2.drawContours(np.zeros_like(support), kept, -1, 1, thickness=cv2.FILLED)
        points = cv2.findNonZero((mask.astype(bool) & strong).astype(np.uint8))
        if points is None:
            return None
    else:
        points = np.concatenate(kept)
    x, y, w, h = cv2.boundingRect(points)
    return float(x), float(y), float(x + w), float(y + h)


def _fill_gaps(boxes: list[Box | None]) -> np.ndarray | None:
    """Frames without a box take the previous frame's box (the next one's at the start)."""
    found = [i for i, b in enumerate(boxes) if b is not None]
    if not found:
        return None
    out, last = [], boxes[found[0]]
    for b in boxes:
        last = b if b is not None else last
        out.append(last)
    return np.array(out, np.float64)


def clean_boxes(boxes: np.ndarray, width: int, height: int, cfg: BoxConfig) -> np.ndarray | None:
    """Replace implausible boxes, suppress temporal outliers, pad small boxes; None when no box is plausible."""
    bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    good = ((bw <= cfg.max_side_frac * width) & (bh <= cfg.max_side_frac * height)
            & (bw * bh >= cfg.min_area_frac * width * height))
    good_idx = np.flatnonzero(good)
    if not len(good_idx):
        return None
    # A bad box takes the next good one (the reference walks forward), else the last good one before it.
    nxt = np.searchsorted(good_idx, np.arange(len(boxes)))
    source = np.where(nxt < len(good_idx), good_idx[np.minimum(nxt, len(good_idx) - 1)], good_idx[-1])
    replaced = boxes[source]
    out = replaced.copy()
    if cfg.outlier_var_frac is not None:
        running = np.cumsum(replaced, axis=0)
        for i in range(1, len(out)):
            var = float(np.mean((replaced[i] - running[i - 1] / i) ** 2))
            area = (replaced[i, 2] - replaced[i, 0]) * (replaced[i, 3] - replaced[i, 1])
            if var > cfg.outlier_var_frac * area:
                out[i] = out[i - 1]
    bw, bh = out[:, 2] - out[:, 0], out[:, 3] - out[:, 1]
    pad_x = np.where(bw <= cfg.pad_below_frac * width, cfg.pad_frac * bw, 0.0)
    pad_y = np.where(bh <= cfg.pad_below_frac * height, cfg.pad_frac * bh, 0.0)
    out += np.stack([-pad_x, -pad_y, pad_x, pad_y], axis=1)
    return np.clip(out, 0, [width, height, width, height])


def motion_score(flows: np.ndarray, scale: float, step: int) -> float:
    """Mean over flow frames of the 99th percentile of |flow - median flow| in reference px per source frame:
    motion relative to the (translating) camera, independent of the flow resolution and frame step."""
    if not len(flows):
        return 0.0
    per_frame = []
    for f in flows:
        rel = f - np.median(f.reshape(-1, 2), axis=0)
        per_frame.append(np.percentile(cv2.magnitude(rel[..., 0], rel[..., 1]), 99))
    return float(np.mean(per_frame)) / (scale * step)


def fallback(frames: int, motion: float, reason: str) -> ActionArea:
    return ActionArea(CENTRE_BOX, np.tile(CENTRE_BOX, (frames, 1)), motion, "fallback", reason)


def action_area(flows: np.ndarray, cfg: BoxConfig, scale: float, step: int = 1) -> ActionArea:
    """Action area of a clip from its (T-1, H, W, 2) flow at ``scale`` = flow short side / reference short side."""
    frames = len(flows) + 1
    if frames < 2:
        return fallback(frames, 0.0, "clip has fewer than 2 frames")
    motion = motion_score(flows, scale, step)
    if motion < cfg.min_motion:
        return fallback(frames, motion, f"motion score {motion:.3g} below boxes.min_motion={cfg.min_motion}")
    height, width = flows.shape[1:3]
    maps = motion_maps(flows, max(1, round(cfg.window / step)), int(round(cfg.border_px * scale)))
    raw = _fill_gaps([frame_box(m, cfg, scale) for m in maps])
    cleaned = clean_boxes(raw, width, height, cfg) if raw is not None else None
    if cleaned is None:
        return fallback(frames, motion, "no frame has a plausible motion box")
    union = np.concatenate([cleaned[:, :2].min(axis=0), cleaned[:, 2:].max(axis=0)])
    if (union[2] - union[0]) * (union[3] - union[1]) < cfg.min_area_frac * width * height:
        return fallback(frames, motion, "union box smaller than boxes.min_area_frac")
    norm = np.array([width, height, width, height], np.float64)
    return ActionArea(tuple(float(v) for v in union / norm), cleaned / norm, motion, "ok")  # type: ignore[arg-type]


def box_iou(a: Box | np.ndarray, b: Box | np.ndarray) -> float:
    """Intersection over union of two x1, y1, x2, y2 boxes (0 when both are empty)."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0
