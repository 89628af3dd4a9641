"""H.264 encoding of RGB frames with PyAV: constant frame rate, fixed short GOP, reproducible bytes."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def rate_fraction(fps: float) -> Fraction:
    return Fraction(fps).limit_denominator(1001)


class H264Writer:
    """Write frames to an MP4 at a constant rate, reproducibly: the same frames always give the same bytes,
    so shards are byte-identical across reruns and worker counts.

    Single-threaded x264, a fixed GOP without scene-cut key frames, no B-frames (cheaper random access
    for the loaders) and no rate-control lookahead: with lookahead on, an encoder opened after another one
    in the same process produced different bytes from run to run (it depends on recycled memory)."""

    def __init__(self, path: Path, width: int, height: int, fps: float, gop: int, crf: int, preset: str):
        self.path = Path(path)
        self.width, self.height = width, height
        self.frames = 0
        rate = rate_fraction(fps)
        self._container = av.open(str(self.path), "w", format="mp4",
                                  options={"movflags": "+faststart"}, container_options={"fflags": "+bitexact"})
        stream = self._container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = 1 / rate
        stream.options = {"crf": str(crf), "preset": preset, "g": str(gop), "keyint_min": str(gop),
                          "sc_threshold": "0", "threads": "1", "flags": "+bitexact", "x264-params": "rc-lookahead=0:bframes=0"}
        self._stream = stream
        self._time_base = 1 / rate

    def write(self, image: np.ndarray) -> None:
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24").reformat(format="yuv420p")
        frame.pts, frame.time_base = self.frames, self._time_base
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> int:
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        return self.frames
