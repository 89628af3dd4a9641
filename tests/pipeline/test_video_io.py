import sys

import numpy as np
import pytest

from pipeline.shards import iter_shard, shard_paths
from pipeline.video.decode import DecodeError, decode_frames, frame_count, resize_frames, uniform_indices
from pipeline.video.ingest import ClipRequest, EncodeSettings, encode_clips
from pipeline.video.probe import VideoRejected, probe
from tests.builders.videos import gradient_frames, write_video

SETTINGS = EncodeSettings(short_side=None, fps=None, gop=4, crf=18, preset="veryfast")


BACKENDS = ("decord", "pyav", "torchcodec")


def test_backends_return_identical_frames_on_shard_clips(sharded):
    rng = np.random.default_rng(0)
    shards = shard_paths(sharded.workdir / "shard")
    checked = 0
    for shard in shards:
        for sample in iter_shard(shard):
            n = frame_count(sample.mp4)
            assert n == sample.meta["num_frames"]
            shape = (sample.meta["height"], sample.meta["width"], 3)
            # out of order and repeated, as samplers ask; then a random subset (with repeats); then every frame
            picks = [[n - 1, 0, n // 2, n // 2, 1], rng.integers(0, n, size=8).tolist(), None]
            for indices in picks:
                decoded = {b: decode_frames(sample.mp4, indices, backend=b) for b in BACKENDS}
                assert decoded["decord"].shape == (n if indices is None else len(indices), *shape)
                for backend in BACKENDS[1:]:
                    assert decoded[backend].dtype == np.uint8
                    assert np.array_equal(decoded["decord"], decoded[backend]), (sample.key, backend, indices)
            checked += 1
    assert checked >= 10


@pytest.mark.parametrize("backend", ["auto", *BACKENDS])
def test_decode_errors_are_clear(tmp_path, backend):
    clip = write_video(tmp_path / "a.mp4", gradient_frames(6, 32, 24))
    with pytest.raises(DecodeError, match="out of range for a clip of 6 frames"):
        decode_frames(clip.read_bytes(), [0, 6], backend)
    with pytest.raises(DecodeError, match=r"indices \[-1\] out of range"):
        decode_frames(clip, [-1], backend)
    if backend != "pyav":  # PyAV chosen on its own raises its own InvalidDataError (a ValueError)
        with pytest.raises(DecodeError, match="could not decode|could not be decoded"):
            decode_frames(b"not a video", [0], backend)


def test_torchcodec_without_ffmpeg_or_installed_names_the_fix(tmp_path, monkeypatch):
    clip = write_video(tmp_path / "a.mp4", gradient_frames(6, 32, 24)).read_bytes()
    import torchcodec.decoders

    def no_ffmpeg(*args, **kwargs):
        raise RuntimeError("Could not load libtorchcodec. Likely causes:\n1. FFmpeg is not properly installed")

    monkeypatch.setattr(torchcodec.decoders, "VideoDecoder", no_ffmpeg)
    with pytest.raises(DecodeError, match="torchcodec could not load the FFmpeg.*apt-get install libavcodec59"):
        decode_frames(clip, [0], "torchcodec")
    monkeypatch.setitem(sys.modules, "torchcodec", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "torchcodec.decoders")
    with pytest.raises(DecodeError, match="torchcodec is not installed"):
        decode_frames(clip, [0], "torchcodec")
    with pytest.raises(ValueError, match="needs the torchcodec backend"):
        decode_frames(clip, [0], "pyav", device="cuda")


def test_resize_and_uniform_indices():
    frames = np.zeros((2, 240, 320, 3), np.uint8)
    assert resize_frames(frames, 120).shape == (2, 120, 160, 3)
    assert uniform_indices(16, 4) == [2, 6, 10, 14]
    assert uniform_indices(3, 6) == [0, 0, 1, 1, 2, 2]


def test_variable_frame_rate_becomes_constant_with_true_timing(tmp_path):
    frames = gradient_frames(10, 32, 24)
    pts = [0, 40, 160, 200, 320, 360, 480, 520, 640, 680]  # gaps of 40 and 120 ms
    src = write_video(tmp_path / "vfr.mp4", frames, fps=25, pts_ms=pts)
    _, clips, failures = encode_clips(src, [ClipRequest("c")], tmp_path, EncodeSettings(None, 25, 4, 0, "veryfast"), 0.1)
    assert not failures
    (clip,) = clips
    # the last frame (680 ms) stays one average interval (19 frames in 0.72 s: 76 ms) -> 0.756 s at 25 fps
    assert clip.frames == 19
    decoded = decode_frames(clip.path.read_bytes())
    # the frame shown at t = 0.08 s (output frame 2) is source frame 1 (on screen from 40 to 160 ms)
    means = decoded.reshape(len(decoded), -1).mean(1)
    src_means = frames.reshape(10, -1).mean(1)
    assert abs(means[2] - src_means[1]) < abs(means[2] - src_means[2])
    assert abs(means[4] - src_means[2]) < abs(means[4] - src_means[1])


def test_rotation_is_applied_and_sizes_are_even(tmp_path):
    rotated = write_video(tmp_path / "rot.mp4", gradient_frames(6, 64, 48), rotation=90)
    _, (clip,), _ = encode_clips(rotated, [ClipRequest("r")], tmp_path, SETTINGS, 0.1)
    assert (clip.width, clip.height) == (48, 64)
    odd = write_video(tmp_path / "odd.mkv", gradient_frames(6, 65, 49), pix_fmt="yuv444p")
    _, (clip,), _ = encode_clips(odd, [ClipRequest("o")], tmp_path, EncodeSettings(40, None, 4, 18, "veryfast"), 0.1)
    assert clip.width % 2 == 0 and clip.height == 40


def test_windows_and_clip_requests(tmp_path):
    src = write_video(tmp_path / "long.mp4", gradient_frames(50, 32, 24), fps=10)  # 5 s
    _, clips, failures = encode_clips(
        src, [ClipRequest("w", window_s=2.0), ClipRequest("part", 1.0, 1.5), ClipRequest("late", 9.0, 10.0)],
        tmp_path, SETTINGS, min_clip_s=0.5)
    by_key = {c.key: c for c in clips}
    assert [by_key[k].frames for k in ("w_w0000", "w_w0001", "w_w0002")] == [20, 20, 10]
    assert by_key["part"].frames == 5 and by_key["part"].start == 1.0
    assert "outside the decodable video" in failures["late"]


def test_probe_rejects(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(VideoRejected, match="empty file"):
        probe(empty)
    text = tmp_path / "text.mp4"
    text.write_text("hello")
    with pytest.raises(VideoRejected, match="not a readable media file"):
        probe(text)
