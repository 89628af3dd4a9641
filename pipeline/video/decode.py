"""Decode frames of a (re-encoded) clip by index: decord as the fast backend, PyAV as the fallback, torchcodec
on request (CPU, or CUDA/NVDEC with ``device="cuda"``).

Frames are decoded at the stored resolution; resizing is a separate, backend-independent step
(``resize_frames``) so the backends give identical pixels on the shard stage's H.264 clips (on the CPU).
"""
from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Sequence

import av
import cv2
import numpy as np

from pipeline.errors import ENVIRONMENT_ERRORS
from pipeline.video.clip_config import DecodeBackend

log = logging.getLogger(__name__)

Source = bytes | Path


class DecodeError(RuntimeError):
    """A clip could not be decoded by any backend."""


def _decord_reader(source: Source):
    import decord  # imported lazily: not available on every platform

    handle = io.BytesIO(source) if isinstance(source, bytes) else str(source)
    return decord.VideoReader(handle, ctx=decord.cpu(0), num_threads=1)


def _decode_decord(source: Source, indices: Sequence[int] | None) -> np.ndarray:
    reader = _decord_reader(source)
    count = len(reader)
    wanted = list(range(count)) if indices is None else list(indices)
    _check_indices(wanted, count)
    return reader.get_batch(wanted).asnumpy()


def _decode_pyav(source: Source, indices: Sequence[int] | None) -> np.ndarray:
    handle = io.BytesIO(source) if isinstance(source, bytes) else str(source)
    with av.open(handle) as container:
        stream = container.streams.video[0]
        wanted = None if indices is None else list(indices)
        last = None if wanted is None else max(wanted, default=-1)
        frames: list[np.ndarray] = []
        for i, frame in enumerate(container.decode(stream)):
            if last is not None and i > last:
                break
            frames.append(frame.to_ndarray(format="rgb24"))
    if wanted is None:
        if not frames:
            raise DecodeError("no frames decoded")
        return np.stack(frames)
    _check_indices(wanted, len(frames) if last is None or len(frames) <= last else last + 1)
    return np.stack([frames[i] for i in wanted])


# The Debian 12 packages of the FFmpeg 5.1 shared libraries torchcodec links (it ships none; PyAV's bundled copies
# are not visible to it). torchcodec loads any FFmpeg from 4 to 9; .ci/run and the README install these.
TORCHCODEC_FFMPEG_PACKAGES = ("libavcodec59", "libavformat59", "libavutil57", "libavdevice59", "libavfilter8",
                              "libswscale6", "libswresample4")


def _torchcodec_missing_ffmpeg(exc: BaseException) -> DecodeError:
    return DecodeError(
        "decode backend torchcodec could not load the FFmpeg shared libraries it needs; install those listed in the "
        f"README's set-up (Debian 12: apt-get install {' '.join(TORCHCODEC_FFMPEG_PACKAGES)}): "
        f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")


def _decode_torchcodec(source: Source, indices: Sequence[int] | None, device: str = "cpu") -> np.ndarray:
    try:
        # imported lazily: optional, and FFmpeg is loaded on import (older releases) or on first use (0.17)
        from torchcodec.decoders import VideoDecoder
    except ImportError as exc:
        if isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] == "torchcodec":
            raise DecodeError(f"decode backend torchcodec is not installed (pip install torchcodec): {exc}") from exc
        raise _torchcodec_missing_ffmpeg(exc) from exc
    except (OSError, RuntimeError) as exc:
        raise _torchcodec_missing_ffmpeg(exc) from exc
    try:
        decoder = VideoDecoder(source if isinstance(source, bytes) else str(source), device=device,
                               seek_mode="exact", dimension_order="NHWC", num_ffmpeg_threads=1)
    except RuntimeError as exc:
        if "Could not load libtorchcodec" in str(exc):
            raise _torchcodec_missing_ffmpeg(exc) from exc
        raise
    count = len(decoder)
    wanted = list(range(count)) if indices is None else list(indices)
    _check_indices(wanted, count)
    return decoder.get_frames_at(wanted).data.cpu().numpy()


def _check_indices(indices: list[int], count: int) -> None:
    bad = [i for i in indices if i < 0 or i >= count]
    if bad:
        raise DecodeError(f"frame indices {bad[:5]} out of range for a clip of {count} frames")
    if not indices:
        raise DecodeError("no frame indices requested")


def decode_frames(source: Source, indices: Sequence[int] | None = None, backend: DecodeBackend = "auto",
                  device: str = "cpu") -> np.ndarray:
    """Frames ``indices`` (all when None) of an encoded clip as uint8 RGB ``(T, H, W, 3)``.

    ``device`` is torchcodec's (``"cuda"`` or ``"cuda:N"``: NVDEC, frames still returned as numpy); the other
    backends decode on the CPU only.
    """
    if device != "cpu" and backend != "torchcodec":
        raise ValueError(f"decode device {device!r} needs the torchcodec backend, not {backend!r}")
    if backend == "torchcodec":
        try:
            return _decode_torchcodec(source, indices, device)
        except (DecodeError, *ENVIRONMENT_ERRORS):
            raise
        except Exception as exc:  # noqa: BLE001 - torchcodec raises RuntimeError/ValueError from FFmpeg
            raise DecodeError(f"torchcodec could not decode the clip: {exc}") from exc
    if backend == "pyav":
        return _decode_pyav(source, indices)
    try:
        return _decode_decord(source, indices)
    except (DecodeError, *ENVIRONMENT_ERRORS):
        raise
    except Exception as exc:  # noqa: BLE001 - decord raises its own error types (or is missing)
        if backend == "decord":
            raise DecodeError(f"decord could not decode the clip: {exc}") from exc
        log.debug("decord failed (%s); falling back to PyAV", exc)
    try:
        return _decode_pyav(source, indices)
    except (DecodeError, *ENVIRONMENT_ERRORS):
        raise
    except Exception as exc:  # noqa: BLE001
        raise DecodeError(f"clip could not be decoded by decord or PyAV: {exc}") from exc


def frame_count(source: Source) -> int:
    """Number of frames of a re-encoded clip (decord's index, PyAV's full decode as the fallback)."""
    try:
        return len(_decord_reader(source))
    except Exception:  # noqa: BLE001
        return len(_decode_pyav(source, None))


def resize_frames(frames: np.ndarray, short_side: int) -> np.ndarray:
    """Resize so the short side is ``short_side`` (area interpolation when shrinking)."""
    h, w = frames.shape[1:3]
    scale = short_side / min(h, w)
    if scale == 1.0:
        return frames
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return np.stack([cv2.resize(f, size, interpolation=interp) for f in frames])


def uniform_indices(num_frames: int, count: int) -> list[int]:
    """``count`` indices spread uniformly over a clip (segment centres), repeating frames of short clips."""
    if num_frames <= 0:
        raise DecodeError("clip has no frames")
    return [min(num_frames - 1, int((i + 0.5) * num_frames / count)) for i in range(count)]
