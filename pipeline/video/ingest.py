"""Cut clips out of a source video in one sequential decode and re-encode each at a constant frame rate.

Output frame k of a clip shows the source frame on screen at ``start + k / fps``, so variable-frame-rate
sources come out at a constant rate with correct timing. Windowed requests cut the whole video into
consecutive fixed-length windows (for unlabelled long videos).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.video.encode import H264Writer, rate_fraction
from pipeline.video.probe import DecodedFrame, VideoInfo, iter_frames

_LEAD_S = 1.0
_EPS = 1e-6  # grid times are sums of floats: 1.1 + 0.1 > 1.2


@dataclass(frozen=True)
class ClipRequest:
    key: str
    start: float = 0.0
    end: float | None = None  # None: to the end of the video
    window_s: float | None = None  # set: cut [start, end) into consecutive windows, keys <key>_w0000, ...


@dataclass(frozen=True)
class EncodeSettings:
    short_side: int | None
    fps: float | None  # None keeps the source's average rate
    gop: int
    crf: int
    preset: str


@dataclass
class EncodedClip:
    key: str
    request_key: str
    path: Path
    start: float
    end: float
    frames: int
    fps: float
    width: int
    height: int


@dataclass
class _OpenClip:
    key: str
    request_key: str
    start: float
    end: float | None
    path: Path
    frames: int = 0
    writer: H264Writer | None = field(default=None, repr=False)

    def next_t(self, fps: float) -> float:
        return self.start + self.frames / fps


def encode_clips(src: Path, requests: list[ClipRequest], out_dir: Path, settings: EncodeSettings,
                 min_clip_s: float) -> tuple[VideoInfo, list[EncodedClip], dict[str, str]]:
    """Encode the requested clips of ``src`` into ``out_dir/<key>.mp4``.

    Returns the source info, the encoded clips and ``{request key: reason}`` for requests that gave no
    clip (outside the video). ``min_clip_s`` drops only the windows of windowed requests (the short tail of an
    unlabelled video): an annotated segment is never dropped for being short, it gets at least one frame and the
    loaders repeat frames to fill the model's input, as the peers do.
    """
    def wanted(t: float) -> bool:
        # The frame on screen at a clip's start can precede it by a frame interval (more on VFR sources).
        return any(r.start - _LEAD_S <= t and (r.end is None or t < r.end) for r in requests)

    info, frames = iter_frames(src, settings.short_side, want=wanted)
    fps = float(rate_fraction(settings.fps or info.fps))

    pending = sorted(requests, key=lambda r: r.start)
    window_index: dict[str, int] = {}
    open_clips: list[_OpenClip] = []
    done: list[EncodedClip] = []

    def open_next(req: ClipRequest, start: float) -> _OpenClip:
        if req.window_s is None:
            return _OpenClip(req.key, req.key, start, req.end, out_dir / f"{req.key}.mp4")
        idx = window_index.get(req.key, 0)
        window_index[req.key] = idx + 1
        end = start + req.window_s if req.end is None else min(start + req.window_s, req.end)
        key = f"{req.key}_w{idx:04d}"
        return _OpenClip(key, req.key, start, end, out_dir / f"{key}.mp4")

    def close(clip: _OpenClip) -> None:
        if clip.writer is not None:
            clip.writer.close()
            done.append(EncodedClip(clip.key, clip.request_key, clip.path, clip.start,
                                    clip.start + clip.frames / fps, clip.frames, fps,
                                    clip.writer.width, clip.writer.height))

    def emit(shown: np.ndarray, until: float) -> None:
        """Write ``shown`` to every open clip for the grid times before ``until``."""
        for clip in list(open_clips):
            while clip.next_t(fps) < until - _EPS and (clip.end is None or clip.next_t(fps) < clip.end - _EPS
                                                        or clip.frames == 0):
                if clip.writer is None:
                    clip.writer = H264Writer(clip.path, shown.shape[1], shown.shape[0], fps, settings.gop,
                                             settings.crf, settings.preset)
                clip.writer.write(shown)
                clip.frames += 1
            if clip.end is not None and clip.next_t(fps) >= clip.end - _EPS:
                open_clips.remove(clip)
                close(clip)
                req = next(r for r in requests if r.key == clip.request_key)
                if req.window_s is not None and (req.end is None or clip.end < req.end - _EPS):
                    open_clips.append(open_next(req, clip.end))

    previous: DecodedFrame | None = None
    for frame in frames:
        while pending and pending[0].start <= frame.t:
            req = pending.pop(0)
            open_clips.append(open_next(req, req.start))
        if previous is not None and open_clips:
            emit(previous.image if previous.image is not None else frame.image, frame.t)
        previous = frame
    if previous is not None and previous.image is not None:
        emit(previous.image, previous.t + 1.0 / info.fps)
    for clip in open_clips:
        close(clip)

    failures: dict[str, str] = {}
    usable: list[EncodedClip] = []
    for clip in done:
        if clip.key != clip.request_key and clip.frames / fps + _EPS < min_clip_s:
            clip.path.unlink(missing_ok=True)  # the short last window of an unlabelled video
        else:
            usable.append(clip)
    produced = {c.request_key for c in done}
    for req in requests:
        if req.key not in produced:
            failures[req.key] = (f"clip [{req.start:.2f}, {req.end if req.end is not None else 'end'}] s is "
                                 f"outside the decodable video")
    return info, usable, failures
