"""The `mv` backend: the motion vectors the shard stage's H.264 encoder already chose, exported by the decoder
(FFmpeg's ``export_mvs`` through PyAV), read as the flow the action-area procedure needs. Only the clip is decoded;
no pixel flow is computed.

A block's vector says where its pixels were in the previous frame (our shards have no B-frames, and the stage
requires a preset with one reference frame); the flow is the opposite displacement, placed at the block's position
in the later frame (the pixel backends place it in the earlier one: a shift of one frame's motion). Exported blocks
are multiples of 4 px on a 4 px grid, so a field of one cell per 4x4 px holds every vector; it is resized to the
flow resolution (``optical_flow.short_side``, never upscaled) with the vectors scaled alike. An intra frame (the
GOP's key frame) carries no vectors and repeats the previous frame's field. The vectors are the encoder's best
match, not the true motion: blocks of flat texture and camera pans are where they differ most
(benchmarks/bench_optical_flow.py measures the boxes against ground truth and under a pan).
"""
from __future__ import annotations

import io

import av
import cv2
import numpy as np

from stages.optical_flow.config import OpticalFlowConfig

CELL = 4  # px: the smallest H.264 partition


def _cells(vectors: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """(rows, cols, 2) flow at one cell per 4x4 px from the decoder's motion-vector records."""
    field = np.zeros((*grid, 2), np.float32)
    past = vectors[vectors["source"] < 0]
    if not len(past):
        return field
    cols, rows = np.maximum(1, past["w"] // CELL).astype(np.int64), np.maximum(1, past["h"] // CELL).astype(np.int64)
    x0 = (past["dst_x"].astype(np.int64) - past["w"] // 2) // CELL
    y0 = (past["dst_y"].astype(np.int64) - past["h"] // 2) // CELL
    scale = past["motion_scale"].astype(np.float32)
    motion = np.stack([-past["motion_x"] / scale, -past["motion_y"] / scale], axis=1).astype(np.float32)
    count = cols * rows
    block = np.repeat(np.arange(len(past)), count)
    within = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
    ys = y0[block] + within // cols[block]
    xs = x0[block] + within % cols[block]
    inside = (ys >= 0) & (ys < grid[0]) & (xs >= 0) & (xs < grid[1])
    field[ys[inside], xs[inside]] = motion[block[inside]]
    return field


def _frame_fields(mp4: bytes, last: int) -> tuple[list[np.ndarray | None], tuple[int, int]]:
    """The cell field of each frame 0..``last`` (None for a frame without vectors) and the frame size (h, w)."""
    fields: list[np.ndarray | None] = []
    size = (0, 0)
    with av.open(io.BytesIO(mp4)) as container:
        stream = container.streams.video[0]
        stream.codec_context.options = {"flags2": "+export_mvs"}
        for frame in container.decode(stream):
            size = (frame.height, frame.width)
            vectors = frame.side_data.get("MOTION_VECTORS")
            grid = (-(-frame.height // CELL), -(-frame.width // CELL))
            fields.append(None if vectors is None else _cells(vectors.to_ndarray(), grid))
            if len(fields) > last:
                break
    if len(fields) <= last:
        raise ValueError(f"the clip has {len(fields)} decodable frames, frame {last} was asked for")
    return fields, size


class MotionVectorFlow:
    """A clip backend (``stages.optical_flow.flow_fields.ClipFlow``): flow read from the encoded clip."""

    def __init__(self, cfg: OpticalFlowConfig):
        self.short_side = cfg.short_side

    def clip_flows(self, mp4: bytes, frames: list[int]) -> np.ndarray:
        """Flow from each of ``frames`` (stored-video indices, ascending) to the next: (T-1, h, w, 2) float32 in
        pixels of the flow resolution; the motion between two frames further apart is the sum of the frames'."""
        fields, (height, width) = _frame_fields(mp4, frames[-1])
        filled: list[np.ndarray] = []
        previous = np.zeros((-(-height // CELL), -(-width // CELL), 2), np.float32)  # before the first vectors
        for field in fields:
            previous = field if field is not None else previous
            filled.append(previous)
        ratio = min(self.short_side, height, width) / min(height, width)
        out_size = (round(width * ratio), round(height * ratio))
        flows = []
        for start, end in zip(frames, frames[1:]):
            cells = np.sum(filled[start + 1:end + 1], axis=0)
            field = cv2.resize(cells, out_size, interpolation=cv2.INTER_NEAREST)
            flows.append(field * np.float32(ratio))
        return np.stack(flows) if flows else np.zeros((0, out_size[1], out_size[0], 2), np.float32)


def mv_flow(cfg: OpticalFlowConfig) -> MotionVectorFlow:
    return MotionVectorFlow(cfg)
