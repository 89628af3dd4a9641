"""Probe raw source videos and stream their frames with true timestamps, rotation and pixel aspect applied.

Everything that can be wrong with a source file is turned into a ``VideoRejected`` with a reason a person
can act on: empty file, not a media file, no video stream, undecodable codec, truncated or corrupt data.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import av
import numpy as np

from pipeline.video.geometry import scaled_size


class VideoRejected(Exception):
    """A source video cannot be used; ``reason`` says why."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class VideoInfo:
    codec: str
    width: int  # coded size with the pixel aspect ratio applied, before rotation
    height: int
    fps: float  # average rate
    duration_s: float | None
    header_frames: int | None  # what the container claims; not trusted


def _open(path: Path) -> av.container.InputContainer:
    if not path.is_file():
        raise VideoRejected("file not found")
    if path.stat().st_size == 0:
        raise VideoRejected("empty file (0 bytes)")
    try:
        return av.open(str(path))
    except av.error.FFmpegError as exc:
        raise VideoRejected(f"not a readable media file ({exc.strerror or exc})") from None


def probe(path: Path) -> VideoInfo:
    with _open(path) as container:
        return _info(container, path.stat().st_size)


def _check_complete(stream: av.video.stream.VideoStream, file_size: int) -> None:
    """A container whose packet index points past the end of the file was cut short (a frame count
    that is merely wrong in the header, as in some AVIs, is not a reason to reject)."""
    entries = stream.index_entries
    end = max((e.pos + e.size for e in entries), default=0) if entries is not None else 0
    if end > file_size:
        raise VideoRejected(f"truncated: the container indexes {end} bytes but the file has {file_size}")


def _info(container: av.container.InputContainer, file_size: int) -> VideoInfo:
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        raise VideoRejected(f"no video stream (streams: {', '.join(kinds)})")
    stream = container.streams.video[0]
    ctx = stream.codec_context
    if ctx is None or not ctx.name:
        raise VideoRejected("video stream uses a codec no installed decoder can read")
    _check_complete(stream, file_size)
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate or rate <= 0:
        raise VideoRejected("video stream has no frame rate")
    width, height = ctx.width, ctx.height
    if not width or not height:
        raise VideoRejected(f"video stream has invalid frame size {width}x{height}")
    sar = stream.sample_aspect_ratio
    if sar and sar > 0 and sar != 1:
        width = int(round(width * float(sar)))
    duration = float(stream.duration * stream.time_base) if stream.duration else (
        container.duration / 1e6 if container.duration else None)
    return VideoInfo(codec=ctx.name, width=width, height=height, fps=float(rate), duration_s=duration,
                     header_frames=stream.frames or None)


@dataclass
class DecodedFrame:
    t: float  # presentation time in seconds from the stream start
    image: np.ndarray | None  # RGB uint8 at the requested size; None when not asked for


def _rotate(image: np.ndarray, rotation: int) -> np.ndarray:
    turns = (rotation // 90) % 4  # display matrix angle is counter-clockwise
    return np.ascontiguousarray(np.rot90(image, k=turns)) if turns else image


def iter_frames(path: Path, short_side: int | None, want: "callable[[float], bool] | None" = None
                ) -> tuple[VideoInfo, Iterator[DecodedFrame]]:
    """Probe ``path`` and stream its frames in presentation order.

    Frames are resized so the displayed short side is ``short_side`` (never upscaled, even sizes), with the
    rotation of the display matrix applied. ``want(t)`` lets the caller skip the pixel conversion of frames
    it does not need. Decoding errors after the first frame raise ``VideoRejected`` (truncated or corrupt).
    """
    container = _open(path)
    try:
        info = _info(container, path.stat().st_size)
    except Exception:
        container.close()
        raise
    stream = container.streams.video[0]

    def frames() -> Iterator[DecodedFrame]:
        decoded = 0
        rotation: int | None = None
        size = scaled_size(info.width, info.height, short_side)  # coded orientation; rotated after scaling
        start = stream.start_time or 0
        try:
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                t = float((frame.pts - start) * stream.time_base)
                if rotation is None:
                    rotation = int(round(frame.rotation or 0)) % 360
                decoded += 1
                image = None
                if want is None or want(t):
                    image = _rotate(frame.to_ndarray(width=size[0], height=size[1], format="rgb24"), rotation)
                yield DecodedFrame(t, image)
        except av.error.FFmpegError as exc:
            raise VideoRejected(f"truncated or corrupt: decoding failed after {decoded} frames ({exc})") from None
        finally:
            container.close()
        if decoded == 0:
            raise VideoRejected(f"no decodable frames (codec {info.codec})")

    return info, frames()
