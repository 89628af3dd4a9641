"""Small real video files for tests, including every kind of broken input the shard stage must survive."""
from __future__ import annotations

import struct
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np


def gradient_frames(count: int, width: int, height: int, seed: int = 0) -> np.ndarray:
    """Frames with structure (so codecs keep detail) and a brightness ramp (so frames differ)."""
    rng = np.random.default_rng(seed)
    base = cv2.resize(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), (width, height), interpolation=cv2.INTER_CUBIC)
    return np.stack([np.clip(base.astype(int) + 6 * i, 0, 255).astype(np.uint8) for i in range(count)])


def write_video(path: Path, frames: np.ndarray, fps: float = 10, codec: str = "libx264", pix_fmt: str = "yuv420p",
                rotation: int | None = None, pts_ms: list[int] | None = None) -> Path:
    """Encode ``frames`` with PyAV; ``pts_ms`` gives variable frame timing, ``rotation`` a display matrix."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = pix_fmt
        if pts_ms is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format=pix_fmt)
            if pts_ms is not None:
                frame.pts, frame.time_base = pts_ms[i], Fraction(1, 1000)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def write_audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def write_mjpeg_avi(path: Path, frames: np.ndarray, fps: float = 10, claimed_frames: int | None = None,
                    fourcc: bytes | None = None) -> Path:
    """An AVI from OpenCV; ``claimed_frames`` patches the header's frame count (a container that
    over-reports), ``fourcc`` replaces the codec tag (a codec no decoder knows)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (frames.shape[2], frames.shape[1]))
    for image in frames:
        writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    writer.release()
    data = bytearray(path.read_bytes())
    if claimed_frames is not None:
        avih = data.find(b"avih") + 8
        data[avih + 16:avih + 20] = struct.pack("<I", claimed_frames)  # dwTotalFrames
        strh = data.find(b"strh") + 8
        data[strh + 32:strh + 36] = struct.pack("<I", claimed_frames)  # dwLength
    if fourcc is not None:
        data = bytearray(bytes(data).replace(b"MJPG", fourcc).replace(b"mjpg", fourcc.lower()))
    path.write_bytes(bytes(data))
    return path
