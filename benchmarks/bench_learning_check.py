"""The paper's claim in miniature: with the same small compute budget, a linear probe on a FILS-pretrained tiny
encoder beats one on a randomly initialised encoder, reported next to VideoMAE-style pixel pre-training.

Data: ``write_samples`` clips (class = motion type; caption = a sentence describing the motion; true object boxes
as action areas), MiniLM caption embeddings. Each encoder is pre-trained with :class:`fils_model.trainer.Trainer`
for the same steps and batch, then probed on frozen features of one centre view (train split) and scored on the
validation split. Prints a JSON table::

    python benchmarks/bench_learning_check.py [--clips-per-class 48] [--steps 1000] [--seeds 0 1]
    python benchmarks/bench_learning_check.py --caption-table   # MiniLM cosine between the class captions

Tiny-regime recipe (explicit settings here; the library defaults stay paper-faithful):
  * captions: one sentence per motion, worded so MiniLM separates them (max pairwise cosine 0.75, see
    ``--caption-table``); a batch of 16 holds ~3 copies of each caption, which is harmless: with identical text
    embeddings the CLIP loss equals multi-positive InfoNCE (tests/test_model_components.py).
  * ``ema_start`` 0.99 (paper 0.996 -> 1 over hundreds of thousands of steps): over ~1000 steps the teacher must
    follow the student, or the feature targets stay those of the random init.
  * ``mask_ratio`` 0.75 (paper 0.9): a 4x4 token grid at 90 % leaves one visible token per slice.
  * ``actclip_source`` (encoder = paper intent): ActCLIP pools the visible encoder outputs of the action area.
Budget: ~1000 steps is where a signal appears for this tiny encoder; at ~250 steps even supervised training of it
stays at chance, so shorter checks measure noise.
"""
from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from fils_model.classifier import VideoClassifier
from fils_model.config import LossConfig, ModelConfig, OptimConfig, PretrainConfig, TrainerConfig
from fils_model.finetune_config import FinetuneRecipe, HeadConfig
from fils_model.linear_probe import train_probe
from fils_model.masking import tube_mask
from fils_model.text_encoders import load_text_encoder
from fils_model.trainer import Trainer
from pipeline.action_area.token_mask import token_mask
from pipeline.evaluation.views import spatial_crops
from pipeline.pretrain_data.transforms import normalise
from pipeline.samples import SAMPLES_CSV, SampleSettings, read_true_boxes, write_samples
from pipeline.video.decode import decode_frames

TEXT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
METHODS = {  # loss weights (actclip, feature, pixel); None: no pre-training
    "random_init": None,
    "videomae_pixel": (0.0, 0.0, 1.0),
    "fils": (1.0, 1.0, 0.0),
}


@dataclass(frozen=True)
class CheckSettings:
    clips_per_class: int = 48
    steps: int = 1000
    batch_size: int = 16
    base_lr: float = 1.5e-3  # per 256 clips; pre-training peak lr = base_lr * batch / 256 x 16 (tiny model)
    probe_steps: int = 300
    img_size: int = 32
    num_frames: int = 8
    mask_ratio: float = 0.75
    validation_every: int = 2  # every n-th generated clip of a class is a validation clip (2 = half of them)
    ema_start: float = 0.99
    actclip_source: str = "encoder"
    threads: int = 1  # torch intra-op threads; >1 on a shared 2-core box makes step times swing 5-20x
    seed: int = 0


@dataclass
class ClipSet:
    video: torch.Tensor  # (N, 3, T, S, S) normalised
    action: torch.Tensor  # (N, tokens) bool
    text: torch.Tensor  # (N, text_dim)
    label: torch.Tensor  # (N,)
    train: np.ndarray  # bool (N,)


def load_clips(root: Path, model: ModelConfig) -> ClipSet:
    """Decode every generated clip once: centre view, true union box -> action tokens, MiniLM caption embedding."""
    rows = [r for r in csv.DictReader(open(root / SAMPLES_CSV)) if r["label"]]
    names = sorted({r["label"] for r in rows})
    videos, actions, captions = [], [], []
    for row in rows:
        path = root / row["path"]
        frames = decode_frames(path)
        step = max(1, len(frames) // model.num_frames)
        frames = frames[::step][: model.num_frames]
        height, width = frames.shape[1:3]
        videos.append(normalise(spatial_crops(frames, model.img_size, 1)[0]))
        truth = read_true_boxes(path)
        boxes = np.array(truth["boxes"])
        union = (boxes[:, 0].min(), boxes[:, 1].min(), boxes[:, 2].max(), boxes[:, 3].max())
        side = min(height, width)
        crop = ((width - side) / 2 / width, (height - side) / 2 / height, (width + side) / 2 / width,
                (height + side) / 2 / height)
        actions.append(torch.from_numpy(token_mask(union, model.img_size, model.patch_size, model.num_frames,
                                                   model.tubelet_size, crop=crop)))
        captions.append(truth["caption"])
    text = torch.from_numpy(load_text_encoder("hf", TEXT_MODEL, device="cpu").encode(captions)).float()
    return ClipSet(torch.stack(videos), torch.stack(actions), text,
                   torch.tensor([names.index(r["label"]) for r in rows]), np.array([r["split"] == "train" for r in rows]))


def pretrain(clips: ClipSet, model: ModelConfig, weights: tuple[float, float, float], s: CheckSettings,
             run_dir: Path) -> VideoClassifier | None:
    """Pre-train an encoder on the training clips; returns it inside a classifier shell (heads untrained)."""
    actclip, feature, pixel = weights
    cfg = PretrainConfig(
        model=model, loss=LossConfig(actclip_weight=actclip, feature_weight=feature, pixel_weight=pixel),
        optim=OptimConfig(base_lr=s.base_lr * 16, min_lr=1e-5, warmup_steps=s.steps // 10, ema_start=s.ema_start),
        trainer=TrainerConfig(total_steps=s.steps, global_batch_size=s.batch_size, seed=s.seed, precision="fp32",
                              checkpoint_every=10**9, log_every=10**9, diagnostics_every=10**9, tensorboard=False))
    trainer = Trainer(cfg, run_dir)
    index = np.flatnonzero(clips.train)
    rng = np.random.default_rng(s.seed)

    def batches():
        while True:
            pick = torch.from_numpy(rng.choice(index, s.batch_size, replace=False))
            yield {"video": clips.video[pick], "action_tokens": clips.action[pick], "text_embedding": clips.text[pick],
                   "mask": tube_mask(s.batch_size, model.grid, model.mask_ratio, rng)}

    trainer.fit(batches())
    return trainer.model.encoder


def probe_accuracy(encoder: torch.nn.Module | None, clips: ClipSet, model: ModelConfig, s: CheckSettings) -> float:
    """Linear probe (frozen encoder, cached features) trained on the train split, top-1 on validation."""
    head = HeadConfig(num_classes=int(clips.label.max()) + 1)
    torch.manual_seed(s.seed)
    classifier = VideoClassifier(model, head)
    if encoder is not None:
        classifier.encoder.load_state_dict(encoder.state_dict())
    classifier.freeze_encoder()
    with torch.no_grad():
        features = torch.cat([classifier.features(chunk) for chunk in clips.video.split(32)])
    train = torch.from_numpy(clips.train)
    recipe = FinetuneRecipe(head=head, mode="linear_probe", total_steps=s.probe_steps, warmup_steps=s.probe_steps // 10,
                            global_batch_size=32, seed=s.seed, model_ema=False,
                            optim={"base_lr": 0.1, "weight_decay": 1e-4}, mix={"mixup": 0, "cutmix": 0, "label_smoothing": 0})
    train_probe(classifier, {"features": features[train], "target_label": clips.label[train]}, recipe)
    with torch.no_grad():
        predicted = classifier.classify(features[~train])["label"].argmax(1)
    return float((predicted == clips.label[~train]).float().mean())


def caption_table() -> dict:
    """Pairwise MiniLM cosine of the class captions (what ActCLIP can tell apart)."""
    from pipeline.samples.synthetic import DEFAULT_CLASSES, MOTIONS

    captions = [f"a striped square {MOTIONS[c]}" for c in DEFAULT_CLASSES]
    text = torch.nn.functional.normalize(
        torch.from_numpy(load_text_encoder("hf", TEXT_MODEL, device="cpu").encode(captions)).float(), dim=-1)
    cosine = (text @ text.t()).numpy()
    off = cosine[~np.eye(len(captions), dtype=bool)]
    return {"captions": dict(zip(DEFAULT_CLASSES, captions)), "max_offdiag": round(float(off.max()), 3),
            "cosine": {a: {b: round(float(cosine[i, j]), 3) for j, b in enumerate(DEFAULT_CLASSES)}
                       for i, a in enumerate(DEFAULT_CLASSES)}}


def run(s: CheckSettings, seeds: list[int] | None = None, methods: tuple[str, ...] | None = None) -> dict:
    """Probe top-1 of every method for each seed (the data set is generated once); torch threads restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(s.threads)
    try:
        return _run(s, seeds, methods)
    finally:
        torch.set_num_threads(threads)


def _run(s: CheckSettings, seeds: list[int] | None, methods: tuple[str, ...] | None) -> dict:
    model = ModelConfig(size="tiny", img_size=s.img_size, patch_size=8, num_frames=s.num_frames, text_dim=384,
                        mask_ratio=s.mask_ratio, actclip_source=s.actclip_source)
    with tempfile.TemporaryDirectory(prefix="fils-learning-check-") as tmp:
        root = Path(tmp)
        write_samples(root / "samples", SampleSettings(clips_per_class=s.clips_per_class, frames=16, width=64,
                                                       height=48, real=False, seed=s.seed,
                                                       validation_every=s.validation_every))
        clips = load_clips(root / "samples", model)
        table: dict[str, dict] = {}
        for seed in seeds or [s.seed]:
            run_s = CheckSettings(**(asdict(s) | {"seed": seed}))
            for method, weights in METHODS.items():
                if methods is not None and method not in methods:
                    continue
                started = time.perf_counter()
                encoder = None if weights is None else pretrain(clips, model, weights, run_s, root / f"{method}-{seed}")
                seconds = time.perf_counter() - started
                entry = table.setdefault(method, {"probe_top1": [], "seconds": [], "step_s": []})
                entry["probe_top1"].append(probe_accuracy(encoder, clips, model, run_s))
                entry["seconds"].append(round(seconds, 1))
                if weights is not None:  # pre-training seconds per optimiser step
                    entry["step_s"].append(round(seconds / s.steps, 4))
    classes = int(clips.label.max()) + 1
    return {"settings": asdict(s), "classes": classes, "chance": 1 / classes,
            "train_clips": int(clips.train.sum()), "validation_clips": int((~clips.train).sum()),
            "results": {m: v | {"mean_top1": float(np.mean(v["probe_top1"]))} for m, v in table.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = CheckSettings()
    for field, value in asdict(defaults).items():
        kind = (lambda v: v.lower() in ("1", "true", "yes")) if isinstance(value, bool) else type(value)
        parser.add_argument(f"--{field.replace('_', '-')}", type=kind, default=value)
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=None)
    parser.add_argument("--caption-table", action="store_true", help="print the caption cosine table and exit")
    args = vars(parser.parse_args())
    if args.pop("caption_table"):
        print(json.dumps(caption_table(), indent=2))
        return
    seeds, methods = args.pop("seeds"), args.pop("methods")
    print(json.dumps(run(CheckSettings(**args), seeds, tuple(methods) if methods else None), indent=2))


if __name__ == "__main__":
    main()
