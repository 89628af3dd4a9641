"""The demo dataset written by ``fils samples OUT``: generated clips with ground truth plus real footage.

Layout::

    OUT/synthetic/<motion>/<motion>_NNN.mp4        generated clip
    OUT/synthetic/<motion>/<motion>_NNN.boxes.json true per-frame boxes (normalised x1, y1, x2, y2)
    OUT/real/<name>.mp4                            real footage (see real/SOURCES.md)
    OUT/samples.csv                                path, label, text, split (for data.source.kind=csv)
    OUT/class_prompts.csv                          head, class, prompt: text prompts of each motion class
"""
from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.samples.captions import noisy_caption
from pipeline.samples.synthetic import DEFAULT_CLASSES, MOTIONS, PAN_CAPTION, STRIPED_SQUARE, Look, make_clip
from pipeline.video.encode import H264Writer

REAL_DIR = Path(__file__).parent / "real"
REAL_CAPTIONS = {
    "bikes": "people riding bicycles in city traffic",
    "carphone": "a man talking on a phone in a car",
    "vtest": "people walking across a campus",
}
SAMPLES_CSV = "samples.csv"
CLASS_PROMPTS_CSV = "class_prompts.csv"
PROMPT_SUBJECTS = ("an object", "something", "a shape")  # each says what moves, not how it looks


@dataclass(frozen=True)
class SampleSettings:
    clips_per_class: int = 4
    classes: tuple[str, ...] = DEFAULT_CLASSES
    width: int = 160
    height: int = 120
    frames: int = 32
    fps: float = 15.0
    pan_px_per_frame: float = 0.0
    validation_every: int = 4  # every n-th clip of a class goes to the validation split
    real: bool = True
    seed: int = 0
    looks: bool = False  # independent random colour, shape, speed and background per clip (else a striped square)
    caption_accuracy: float | None = None  # noisy captions (pipeline.samples.captions): motion right this often
    background_contrast: float = 1.0  # < 1 fades the background towards grey (synthetic.make_clip)

    def __post_init__(self) -> None:  # before any file is written
        if self.clips_per_class < 1 or self.frames < 2 or min(self.width, self.height) < 16:
            raise ValueError(f"need clips_per_class >= 1, frames >= 2 and sides >= 16 px, got {self.clips_per_class}, "
                             f"{self.frames}, {self.width}x{self.height}")
        if self.caption_accuracy is not None and not 0.0 <= self.caption_accuracy <= 1.0:
            raise ValueError(f"caption accuracy must be in [0, 1], got {self.caption_accuracy}")
        if not 0.0 <= self.background_contrast <= 1.0:
            raise ValueError(f"background contrast must be in [0, 1], got {self.background_contrast}")


# What `fils samples` writes for `make demo`: enough clips that a few minutes of CPU pre-training measurably beat a
# random encoder on >= 150 validation clips, with honest captions (the motion right 80 % of the time, paraphrased).
DEMO_SAMPLES = SampleSettings(clips_per_class=100, width=96, height=72, frames=16, validation_every=3,
                              caption_accuracy=0.8, background_contrast=0.2)


def write_samples(out: Path, settings: SampleSettings = SampleSettings()) -> Path:
    """Write the demo dataset to ``out`` and return the path of its ``samples.csv``."""
    out = Path(out)
    rows = []
    for c, motion in enumerate(settings.classes):
        folder = out / "synthetic" / motion
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(settings.clips_per_class):
            seed = settings.seed * 100_003 + c * 1000 + i
            rng = np.random.default_rng([seed, 7])
            look = Look.draw(rng) if settings.looks else None
            clip = make_clip(motion, seed=seed, width=settings.width, height=settings.height, frames=settings.frames,
                             pan_px_per_frame=settings.pan_px_per_frame, look=look,
                             background_contrast=settings.background_contrast)
            truth = {"motion": motion} | (look.__dict__ if look else {})
            if settings.caption_accuracy is not None:
                noisy = noisy_caption(motion, look or STRIPED_SQUARE, settings.classes,
                                      settings.caption_accuracy, rng)
                clip.caption = noisy.text + (PAN_CAPTION if settings.pan_px_per_frame else "")
                truth["described_motion"] = noisy.described_motion
            name = f"{motion}_{i:03d}"
            writer = H264Writer(folder / f"{name}.mp4", settings.width, settings.height, settings.fps,
                                gop=8, crf=16, preset="veryfast")
            for frame in clip.frames:
                writer.write(frame)
            writer.close()
            (folder / f"{name}.boxes.json").write_text(json.dumps(
                {"fps": settings.fps, "boxes": clip.boxes.round(5).tolist(), "caption": clip.caption, "factors": truth}))
            split = "validation" if settings.validation_every and (i + 1) % settings.validation_every == 0 else "train"
            rows.append({"path": f"synthetic/{motion}/{name}.mp4", "label": motion, "text": clip.caption,
                         "split": split})
    if settings.real:
        (out / "real").mkdir(parents=True, exist_ok=True)
        for name, caption in REAL_CAPTIONS.items():
            shutil.copyfile(REAL_DIR / f"{name}.mp4", out / "real" / f"{name}.mp4")
            rows.append({"path": f"real/{name}.mp4", "label": "", "text": caption, "split": "train"})
    csv_path = out / SAMPLES_CSV
    with open(csv_path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["path", "label", "text", "split"])
        writer.writeheader()
        writer.writerows(rows)
    write_class_prompts(out, settings.classes)
    return csv_path


def write_class_prompts(out: Path, classes: Sequence[str]) -> Path:
    """Write ``out/class_prompts.csv``, the prompt file of zero-shot evaluation (``stages.evaluate.prompts``): each
    class described by its canonical motion phrase (``synthetic.MOTIONS``), as a real benchmark ships its class
    names; the captions' other paraphrases (``captions.PARAPHRASES``) are left out."""
    path = Path(out) / CLASS_PROMPTS_CSV
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["head", "class", "prompt"])
        writer.writerows(["label", motion, f"{subject} {MOTIONS[motion]}"]
                         for motion in classes for subject in PROMPT_SUBJECTS)
    return path


def read_true_boxes(video: Path) -> dict:
    """The ground truth written next to a generated clip."""
    return json.loads(video.with_name(video.stem + ".boxes.json").read_text())
