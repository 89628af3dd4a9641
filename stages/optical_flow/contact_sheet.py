"""Contact sheets for a visual check of the boxes: per clip, sampled frames with the per-frame box (yellow)
and the union box (green), and below them the flow magnitude as a heat map."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from stages.optical_flow.boxes import ActionArea

_GREEN, _YELLOW, _WHITE = (0, 255, 0), (255, 220, 0), (255, 255, 255)
_HEADER = 16


def _draw_box(image: np.ndarray, box: np.ndarray, colour: tuple[int, int, int], thickness: int) -> None:
    h, w = image.shape[:2]
    x1, y1, x2, y2 = (np.asarray(box, np.float64) * [w, h, w, h]).round().astype(int).tolist()
    cv2.rectangle(image, (x1, y1), (max(x1, x2 - 1), max(y1, y2 - 1)), colour, thickness)


def render_tile(key: str, rgb: np.ndarray, flows: np.ndarray, area: ActionArea, frames: int,
                tile_height: int) -> np.ndarray:
    """One clip's strip: ``frames`` evenly spaced frames over their flow magnitude (RGB uint8).

    ``rgb`` holds the frames the flow was computed on (``len(flows) + 1`` of them)."""
    picks = sorted({min(len(rgb) - 1, int((i + 0.5) * len(rgb) / frames)) for i in range(frames)})
    scale = tile_height / rgb.shape[1]
    size = (max(1, round(rgb.shape[2] * scale)), tile_height)
    mags = np.linalg.norm(flows, axis=-1) if len(flows) else np.zeros((1, *rgb.shape[1:3]), np.float32)
    peak = max(float(mags.max()), 1e-6)
    columns = []
    for k in picks:
        frame = cv2.resize(rgb[k], size, interpolation=cv2.INTER_AREA)
        heat = cv2.applyColorMap((255 * mags[min(k, len(mags) - 1)] / peak).astype(np.uint8), cv2.COLORMAP_INFERNO)
        heat = cv2.resize(cv2.cvtColor(heat, cv2.COLOR_BGR2RGB), size, interpolation=cv2.INTER_NEAREST)
        _draw_box(frame, area.frame_boxes[k], _YELLOW, 1)
        for image in (frame, heat):
            _draw_box(image, np.array(area.box), _GREEN, 2)
        columns.append(np.vstack([frame, heat]))
    body = np.hstack(columns)
    header = np.zeros((_HEADER, body.shape[1], 3), np.uint8)
    label = f"{key}  {area.status}  motion {area.motion:.2f}"
    cv2.putText(header, label, (3, _HEADER - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, _WHITE, 1, cv2.LINE_AA)
    return np.vstack([header, body])


def write_sheets(tiles: list[np.ndarray], out_dir: Path, per_sheet: int) -> list[Path]:
    """Stack tiles (padded to one width) into PNGs of ``per_sheet`` rows: ``out_dir/sheet_NNN.png``."""
    if not tiles:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    width = max(t.shape[1] for t in tiles)
    padded = [np.pad(t, ((0, 2), (0, width - t.shape[1]), (0, 0))) for t in tiles]
    paths = []
    for n, start in enumerate(range(0, len(padded), per_sheet)):
        path = out_dir / f"sheet_{n:03d}.png"
        if not cv2.imwrite(str(path), cv2.cvtColor(np.vstack(padded[start:start + per_sheet]), cv2.COLOR_RGB2BGR)):
            raise OSError(f"could not write contact sheet {path}")
        paths.append(path)
    return paths
