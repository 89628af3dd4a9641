"""The paper's claim in miniature, as a controlled experiment: does pre-training with FILS (feature prediction in
the language space + ActCLIP on automatic captions) give a tiny video encoder better frozen features than the
alternatives at the same steps and batch?

Data (``pipeline.samples``): generated clips whose factors are drawn independently: the motion (5 classes, the
probe label), the object's colour and shape, its speed (slow/fast) and the background. Captions come from a noisy
captioner (``pipeline.samples.captions``): several paraphrases and templates, the object described correctly, the
motion only with probability ``caption_accuracy`` (0.6), otherwise another motion; speed and background are never
mentioned. Action areas are the optical_flow stage's estimated boxes (DIS + MOFO boxes on the decoded clips), not
the ground truth. Captions are embedded with the packaged MiniLM.

Arms, all at the same steps and batch: ``random_init`` (no pre-training), ``videomae_pixel`` (pixel loss only),
``feature_only``, ``actclip_only``, ``fils`` (ActCLIP + feature prediction), ``fils_shuffled_captions`` (the
control that should fail: FILS with the captions permuted across clips, so they carry no information about their
clip), ``supervised`` (the encoder trained on the motion labels: an upper bound). Each trained arm gets the same
small learning-rate sweep on a held-out tune split (one sweep seed; criterion: linear-probe motion accuracy on the
tune split), then ``--seeds`` seeds at its chosen rate, scored on the validation split.

Probes on frozen features: a linear probe on mean-pooled tokens (the pipeline's) and an attentive probe (V-JEPA),
for two targets: ``motion`` (which the captions name, noisily) and ``speed`` (which they never name). The
``text_only`` reference is the linear probe on the caption embeddings alone: the captions' information about the
label. Reported per arm: mean and 95 % t-interval over seeds, paired differences to FILS (same seed: same init,
data order and masks), each loss at the start and end of training next to its trivial floor, FLOPs per step.

Every finished run is written to ``--out`` as JSON, so an interrupted benchmark resumes where it stopped; the
table is written to ``--table`` (``benchmarks/results/learning_check.json``)::

    python benchmarks/bench_learning_check.py [--jobs 2] [--seeds 0 1 2 3 4]
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats
from torch.utils.flop_counter import FlopCounterMode

from fils_model.attentive_probe import train_attentive_probe
from fils_model.classifier import VideoClassifier
from fils_model.config import LossConfig, ModelConfig, OptimConfig, PretrainConfig, TrainerConfig
from fils_model.finetune_config import FinetuneRecipe, HeadConfig
from fils_model.finetune_trainer import FinetuneTrainer
from fils_model.linear_probe import train_probe
from fils_model.masking import tube_mask
from fils_model.pretrain_trainer import PretrainTrainer
from pipeline.samples import SAMPLES_CSV, SampleSettings, read_true_boxes, write_samples
from pipeline.samples.synthetic import DEFAULT_CLASSES, SPEEDS
from pipeline.video.decode import decode_frames
from pipeline.video.transforms import normalise
from pipeline.video.views import spatial_crops
from stages.captions.text_encoders import load_text_encoder
from stages.optical_flow.boxes import box_iou
from stages.optical_flow.config import OpticalFlowConfig
from stages.optical_flow.flow_fields import make_flow
from stages.optical_flow.stage import frames_area
from stages.pretrain.token_mask import token_mask

TEXT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
ARMS: dict[str, tuple[float, float, float] | str | None] = {  # (actclip, feature, pixel) weights
    "random_init": None,
    "videomae_pixel": (0.0, 0.0, 1.0),
    "feature_only": (0.0, 1.0, 0.0),
    "actclip_only": (1.0, 0.0, 0.0),
    "fils": (1.0, 1.0, 0.0),
    "fils_shuffled_captions": (1.0, 1.0, 0.0),
    "supervised": "supervised",
}
TARGETS = ("motion", "speed")
PROBES = ("linear", "attentive")
SPLITS = ("train", "tune", "validation")


@dataclass(frozen=True)
class CheckSettings:
    train_per_class: int = 400
    tune_per_class: int = 40
    validation_per_class: int = 100
    caption_accuracy: float = 0.6
    steps: int = 3000
    batch_size: int = 16
    base_lr: float = 0.024  # per 256 clips: peak lr 1.5e-3 at batch 16
    lr_sweep: tuple[float, ...] = (0.5, 1.0, 2.0)  # multipliers of base_lr tried per arm on the tune split
    sweep_seed: int = 100
    probe_steps: int = 300
    img_size: int = 32
    num_frames: int = 8
    mask_ratio: float = 0.75
    ema_start: float = 0.99
    data_seed: int = 0


@dataclass
class ClipSet:
    video: torch.Tensor  # (N, 3, T, S, S) normalised centre view
    pixels: torch.Tensor  # (N, 3, T, S, S) in [0, 1]
    action: torch.Tensor  # (N, tokens) bool, from the estimated boxes
    text: torch.Tensor  # (N, text_dim)
    labels: dict[str, torch.Tensor]  # target -> (N,) class index
    split: np.ndarray  # (N,) str
    box_iou: list[float] = field(default_factory=list)  # estimated vs true union box


def model_config(s: CheckSettings) -> ModelConfig:
    return ModelConfig(size="tiny", img_size=s.img_size, patch_size=8, num_frames=s.num_frames, text_dim=384,
                       mask_ratio=s.mask_ratio)


def build_clips(s: CheckSettings, root: Path) -> ClipSet:
    """Generate, encode and decode the clips; estimated action areas; caption embeddings."""
    per_class = s.train_per_class + s.tune_per_class + s.validation_per_class
    write_samples(root, SampleSettings(clips_per_class=per_class, frames=16, width=48, height=48, real=False,
                                       seed=s.data_seed, validation_every=0, looks=True,
                                       caption_accuracy=s.caption_accuracy))
    model = model_config(s)
    ocfg = OpticalFlowConfig(short_side=48, dis_finest_scale=None)  # DIS at its preset's pyramid, as calibrated
    flow = make_flow(ocfg)
    rows = list(csv.DictReader(open(root / SAMPLES_CSV)))
    videos, pixels, actions, captions, motion, speed, split, ious = [], [], [], [], [], [], [], []
    for index, row in enumerate(rows):
        path = root / row["path"]
        frames = decode_frames(path)
        truth = read_true_boxes(path)
        _, area = frames_area(frames, ocfg, flow)
        true_boxes = np.array(truth["boxes"])
        true_union = (true_boxes[:, 0].min(), true_boxes[:, 1].min(), true_boxes[:, 2].max(), true_boxes[:, 3].max())
        ious.append(float(box_iou(np.array(area.box), np.array(true_union))))
        clip = frames[:: max(1, len(frames) // model.num_frames)][: model.num_frames]
        height, width = clip.shape[1:3]
        view = spatial_crops(clip, model.img_size, 1)[0]
        videos.append(normalise(view))
        pixels.append(torch.from_numpy(view).permute(3, 0, 1, 2).float() / 255)
        side = min(height, width)
        crop = ((width - side) / 2 / width, (height - side) / 2 / height, (width + side) / 2 / width,
                (height + side) / 2 / height)
        actions.append(torch.from_numpy(token_mask(area.box, model.img_size, model.patch_size, model.num_frames,
                                                   model.tubelet_size, crop=crop)))
        captions.append(row["text"])
        motion.append(DEFAULT_CLASSES.index(truth["factors"]["motion"]))
        speed.append(list(SPEEDS).index(truth["factors"]["speed"]))
        within = index % per_class
        split.append("train" if within < s.train_per_class else
                     "tune" if within < s.train_per_class + s.tune_per_class else "validation")
    text = torch.from_numpy(load_text_encoder("hf", TEXT_MODEL, device="cpu").encode(captions)).float()
    return ClipSet(torch.stack(videos), torch.stack(pixels), torch.stack(actions), text,
                   {"motion": torch.tensor(motion), "speed": torch.tensor(speed)}, np.array(split), ious)


def save_clips(clips: ClipSet, path: Path) -> None:
    torch.save({"video": clips.video, "pixels": clips.pixels, "action": clips.action, "text": clips.text,
                **{f"label_{k}": v for k, v in clips.labels.items()}, "split": clips.split.tolist(),
                "box_iou": clips.box_iou}, path)


def load_clips(path: Path) -> ClipSet:
    data = torch.load(path, weights_only=True)  # written by this benchmark run
    return ClipSet(data["video"], data["pixels"], data["action"], data["text"],
                   {k[6:]: v for k, v in data.items() if k.startswith("label_")}, np.array(data["split"]),
                   data["box_iou"])


# -- one run -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Run:
    arm: str
    lr_scale: float
    seed: int
    purpose: str  # "sweep" (scored on tune) or "eval" (scored on validation)

    @property
    def name(self) -> str:
        return f"{self.purpose}-{self.arm}-lr{self.lr_scale:g}-seed{self.seed}"


def _batches(clips: ClipSet, model: ModelConfig, s: CheckSettings, run: Run):
    """Training batches of the train split (the supervised arm gets video and label only); the control's captions
    are permuted across the training clips once."""
    index = np.flatnonzero(clips.split == "train")
    rng = np.random.default_rng(run.seed)
    text = clips.text.clone()
    if run.arm == "fils_shuffled_captions":
        text[index] = clips.text[rng.permutation(index)]
    while True:
        pick = torch.from_numpy(rng.choice(index, s.batch_size, replace=False))
        if ARMS[run.arm] == "supervised":
            yield {"video": clips.video[pick], "target_label": clips.labels["motion"][pick]}
            continue
        yield {"video": clips.video[pick], "pixels": clips.pixels[pick], "action_tokens": clips.action[pick],
               "text_embedding": text[pick], "mask": tube_mask(s.batch_size, model.grid, model.mask_ratio, rng)}


def _step_flops(make_trainer, batch: dict[str, torch.Tensor]) -> int:
    """FLOPs of one optimiser step (forward + backward) of a throw-away trainer."""
    trainer = make_trainer()
    with FlopCounterMode(display=False) as counter:
        trainer.train_step(batch)
    return int(counter.get_total_flops())


def _read_losses(csv_path: Path) -> dict[str, dict[str, float]]:
    series: dict[str, list[float]] = {}
    with open(csv_path) as fh:
        for row in csv.DictReader(fh):
            if row["name"].startswith("loss"):
                series.setdefault(row["name"], []).append(float(row["value"]))
    return {k: {"first": float(np.mean(v[:3])), "last": float(np.mean(v[-3:]))} for k, v in series.items()}


def pretrain(clips: ClipSet, s: CheckSettings, run: Run, run_dir: Path) -> tuple[torch.nn.Module | None, dict]:
    """Train the arm's encoder; returns it and its record (losses, FLOPs per step)."""
    model = model_config(s)
    weights = ARMS[run.arm]
    if weights is None:
        torch.manual_seed(run.seed)
        return VideoClassifier(model, HeadConfig(num_classes=2)).encoder, {}
    lr = s.base_lr * run.lr_scale
    stream = _batches(clips, model, s, run)
    if weights == "supervised":
        recipe = FinetuneRecipe(head=HeadConfig(num_classes=len(DEFAULT_CLASSES)), total_steps=s.steps,
                                warmup_steps=s.steps // 10, global_batch_size=s.batch_size, seed=run.seed,
                                model_ema=False, drop_path=0.0, checkpoint_every=10**9, log_every=20,
                                optim={"base_lr": lr, "layer_decay": 1.0},
                                mix={"mixup": 0, "cutmix": 0, "label_smoothing": 0})
        def make_trainer(directory: Path = run_dir / "flops") -> FinetuneTrainer:
            torch.manual_seed(run.seed)
            return FinetuneTrainer(recipe, VideoClassifier(model, recipe.head), directory)

        flops = _step_flops(make_trainer, next(_batches(clips, model, s, run)))
        trainer = make_trainer(run_dir)
        trainer.fit(stream)
        losses = _read_losses(run_dir / "metrics.csv")
        return trainer.model.encoder, {"flops_per_step": flops, "losses": losses,
                                       "floors": {"loss": math.log(len(DEFAULT_CLASSES))}}
    actclip, feature, pixel = weights
    cfg = PretrainConfig(
        model=model, loss=LossConfig(actclip_weight=actclip, feature_weight=feature, pixel_weight=pixel),
        optim=OptimConfig(base_lr=lr, min_lr=1e-5, warmup_steps=s.steps // 10, ema_start=s.ema_start),
        trainer=TrainerConfig(total_steps=s.steps, global_batch_size=s.batch_size, seed=run.seed, precision="fp32",
                              checkpoint_every=10**9, log_every=20, diagnostics_every=10**9, tensorboard=False))
    flops = _step_flops(lambda: PretrainTrainer(cfg, run_dir / "flops"), next(_batches(clips, model, s, run)))
    trainer = PretrainTrainer(cfg, run_dir)
    trainer.fit(stream)
    tube = model.tubelet_size * model.patch_size**2  # pixels per channel in a normalised tube
    floors = {"loss_pixel": (tube - 1) / tube, "loss_actclip": math.log(s.batch_size)}
    return trainer.model.encoder, {"flops_per_step": flops, "losses": _read_losses(run_dir / "metrics.csv"),
                                   "floors": {k: v for k, v in floors.items() if k[5:] in _active(weights)}}


def _active(weights: tuple[float, float, float]) -> set[str]:
    return {name for name, w in zip(("actclip", "feature", "pixel"), weights) if w > 0}


@torch.no_grad()
def _tokens(encoder: torch.nn.Module, clips: ClipSet) -> torch.Tensor:
    encoder.eval()
    return torch.cat([encoder(chunk) for chunk in clips.video.split(64)])


def _probe_recipe(classes: int, s: CheckSettings, seed: int) -> FinetuneRecipe:
    return FinetuneRecipe(head=HeadConfig(num_classes=classes), mode="linear_probe", total_steps=s.probe_steps,
                          warmup_steps=s.probe_steps // 10, global_batch_size=32, seed=seed, model_ema=False,
                          optim={"base_lr": 0.1, "weight_decay": 1e-4},
                          mix={"mixup": 0, "cutmix": 0, "label_smoothing": 0})


def probe_scores(tokens: torch.Tensor, clips: ClipSet, s: CheckSettings, seed: int, model: ModelConfig
                 ) -> dict[str, dict[str, dict[str, float]]]:
    """probe -> target -> split -> top-1, probes trained on the train split of frozen ``tokens``."""
    train = torch.from_numpy(clips.split == "train")
    out: dict[str, dict[str, dict[str, float]]] = {p: {} for p in PROBES}
    for target in TARGETS:
        labels = clips.labels[target]
        recipe = _probe_recipe(int(labels.max()) + 1, s, seed)
        shell = VideoClassifier(model, recipe.head)
        train_probe(shell, {"features": tokens.mean(1)[train], "target_label": labels[train]}, recipe)
        attentive = train_attentive_probe(tokens[train], {"target_label": labels[train]}, recipe)
        with torch.no_grad():
            predicted = {"linear": shell.classify(tokens.mean(1))["label"].argmax(1),
                         "attentive": attentive(tokens)["label"].argmax(1)}
        for probe, guess in predicted.items():
            out[probe][target] = {split: float((guess == labels)[torch.from_numpy(clips.split == split)].float().mean())
                                  for split in ("tune", "validation")}
    return out


def text_only_reference(clips: ClipSet, s: CheckSettings) -> dict[str, float]:
    """Linear probe on the caption embeddings alone (motion and speed, validation top-1)."""
    train, val = torch.from_numpy(clips.split == "train"), torch.from_numpy(clips.split == "validation")
    out = {}
    for target in TARGETS:
        labels = clips.labels[target]
        recipe = _probe_recipe(int(labels.max()) + 1, s, 0)
        shell = VideoClassifier(model_config(s).model_copy(update={"embed_dim": clips.text.shape[1]}), recipe.head)
        train_probe(shell, {"features": clips.text[train], "target_label": labels[train]}, recipe)
        with torch.no_grad():
            out[target] = float((shell.classify(clips.text[val])["label"].argmax(1) == labels[val]).float().mean())
    return out


_WORKER: dict[str, Any] = {}


def _init_worker(data_path: str, settings: dict) -> None:
    torch.set_num_threads(1)
    _WORKER["clips"], _WORKER["s"] = load_clips(Path(data_path)), CheckSettings(**settings)


def execute(run: Run, out_dir: str) -> dict:
    """One run in a worker process: pre-train, probe, write ``<out>/<run>.json``."""
    clips, s = _WORKER["clips"], _WORKER["s"]
    started = time.perf_counter()
    run_dir = Path(out_dir) / "runs" / run.name
    encoder, record = pretrain(clips, s, run, run_dir)
    pretrain_s = time.perf_counter() - started
    scores = probe_scores(_tokens(encoder, clips), clips, s, run.seed, model_config(s))
    result = asdict(run) | record | {"scores": scores, "pretrain_s": round(pretrain_s, 1),
                                     "seconds": round(time.perf_counter() - started, 1)}
    path = Path(out_dir) / f"{run.name}.json"
    path.write_text(json.dumps(result, indent=1))
    return result


# -- the experiment ----------------------------------------------------------------------------------------
def _run_all(runs: list[Run], out: Path, data: Path, s: CheckSettings, jobs: int) -> dict[str, dict]:
    done = {r.name: json.loads((out / f"{r.name}.json").read_text()) for r in runs if (out / f"{r.name}.json").is_file()}
    todo = [r for r in runs if r.name not in done]
    if jobs <= 1:
        _init_worker(str(data), asdict(s))
        for run in todo:
            done[run.name] = execute(run, str(out))
        return done
    with ProcessPoolExecutor(jobs, mp_context=get_context("spawn"), initializer=_init_worker,
                             initargs=(str(data), asdict(s))) as pool:
        for run, result in zip(todo, pool.map(execute, todo, [str(out)] * len(todo))):
            done[run.name] = result
    return done


def interval(values: list[float]) -> dict[str, float]:
    """Mean and 95 % t-interval half-width over seeds."""
    array = np.asarray(values, float)
    if len(array) < 2:
        return {"mean": float(array.mean()), "ci95": math.nan, "n": len(array)}
    half = float(stats.t.ppf(0.975, len(array) - 1) * array.std(ddof=1) / math.sqrt(len(array)))
    return {"mean": float(array.mean()), "ci95": half, "n": len(array)}


def summarise(results: dict[str, dict], arms: list[str], seeds: list[int], lrs: dict[str, float]) -> dict:
    table: dict[str, Any] = {}
    by_arm = {arm: [results[Run(arm, lrs[arm], seed, "eval").name] for seed in seeds] for arm in arms}
    for arm, runs in by_arm.items():
        entry: dict[str, Any] = {"lr_scale": lrs[arm]}
        for probe in PROBES:
            for target in TARGETS:
                values = [r["scores"][probe][target]["validation"] for r in runs]
                entry[f"{probe}_{target}"] = interval(values) | {"per_seed": values}
        if runs[0].get("flops_per_step"):
            entry["gflops_per_step"] = round(runs[0]["flops_per_step"] / 1e9, 3)
            entry["losses"] = {name: {"first": float(np.mean([r["losses"][name]["first"] for r in runs])),
                                      "last": float(np.mean([r["losses"][name]["last"] for r in runs])),
                                      "floor": runs[0]["floors"].get(name)}
                               for name in runs[0]["losses"]}
        entry["pretrain_s"] = float(np.mean([r["pretrain_s"] for r in runs]))
        table[arm] = entry
    paired: dict[str, Any] = {}
    if "fils" in by_arm:
        for arm in arms:
            if arm == "fils":
                continue
            paired[arm] = {f"{probe}_{target}": interval([
                f["scores"][probe][target]["validation"] - o["scores"][probe][target]["validation"]
                for f, o in zip(by_arm["fils"], by_arm[arm])]) for probe in PROBES for target in TARGETS}
    return {"arms": table, "fils_minus_arm": paired}


def run(s: CheckSettings, seeds: list[int], arms: tuple[str, ...] = tuple(ARMS), out: Path | None = None,
        jobs: int = 1, sweep: bool = True) -> dict:
    """The whole experiment (resumable in ``out``); without ``sweep`` every arm uses ``base_lr``."""
    out = Path(out or Path(os.environ.get("TMPDIR", "/tmp")) / "fils-learning-check")
    out.mkdir(parents=True, exist_ok=True)
    data = out / f"clips-{_data_key(s)}.pt"
    if not data.is_file():
        build_start = time.perf_counter()
        clips = build_clips(s, out / "samples")
        save_clips(clips, data)
        (out / "data.json").write_text(json.dumps({"seconds": time.perf_counter() - build_start}))
    clips = load_clips(data)
    trained = [a for a in arms if ARMS[a] is not None]
    lrs = {a: 1.0 for a in arms}
    sweep_results: dict[str, dict[str, float]] = {}
    if sweep and len(s.lr_sweep) > 1:
        runs = [Run(a, lr, s.sweep_seed, "sweep") for a in trained for lr in s.lr_sweep]
        results = _run_all(runs, out, data, s, jobs)
        for arm in trained:
            sweep_results[arm] = {f"{lr:g}": results[Run(arm, lr, s.sweep_seed, "sweep").name]["scores"]["linear"]
                                  ["motion"]["tune"] for lr in s.lr_sweep}
            lrs[arm] = max(s.lr_sweep, key=lambda lr: sweep_results[arm][f"{lr:g}"])
    results = _run_all([Run(a, lrs[a], seed, "eval") for a in arms for seed in seeds], out, data, s, jobs)
    counts = {split: int((clips.split == split).sum()) for split in SPLITS}
    return {"settings": asdict(s), "seeds": seeds, "clips": counts, "chance": {"motion": 1 / len(DEFAULT_CLASSES),
                                                                                 "speed": 1 / len(SPEEDS)},
            "estimated_box_iou_vs_truth": float(np.mean(clips.box_iou)),
            "text_only_reference": text_only_reference(clips, s), "lr_sweep_tune_top1": sweep_results,
            **summarise(results, list(arms), seeds, lrs)}


def _data_key(s: CheckSettings) -> str:
    keys = ("train_per_class", "tune_per_class", "validation_per_class", "caption_accuracy", "img_size",
            "num_frames", "data_seed")
    return "-".join(f"{getattr(s, k):g}" for k in keys)


ARM_TITLES = {
    "random_init": "random init (no pre-training)",
    "videomae_pixel": "VideoMAE-style pixel loss",
    "feature_only": "feature prediction only",
    "actclip_only": "ActCLIP only",
    "fils": "**FILS** (ActCLIP + feature prediction)",
    "fils_shuffled_captions": "FILS, captions shuffled across clips (control)",
    "supervised": "supervised on the motion labels (upper bound)",
}


def render_markdown(table: dict) -> str:
    """The README's table: validation top-1 per arm and probe (mean ± 95 % interval), paired difference to FILS."""
    def cell(entry: dict) -> str:
        return f"{entry['mean']:.3f} ± {entry['ci95']:.3f}"

    columns = [f"{p}_{t}" for t in TARGETS for p in PROBES]
    lines = ["| encoder | lr x | " + " | ".join(c.replace("_", " ") for c in columns) + " | FILS − arm (linear motion) | GFLOP/step |",
             "|---|---|" + "---|" * (len(columns) + 2)]
    for arm, entry in table["arms"].items():
        paired = table["fils_minus_arm"].get(arm, {}).get("linear_motion")
        lines.append(f"| {ARM_TITLES[arm]} | {entry['lr_scale']:g} | " + " | ".join(cell(entry[c]) for c in columns)
                     + f" | {cell(paired) if paired else '–'} | {entry.get('gflops_per_step', 0):g} |")
    text = table["text_only_reference"]
    lines.append(f"| text only: linear probe on the caption embeddings | – | {text['motion']:.3f} | – | "
                 f"{text['speed']:.3f} | – | – | – |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = CheckSettings()
    for name, value in asdict(defaults).items():
        if isinstance(value, tuple):
            parser.add_argument(f"--{name.replace('_', '-')}", type=float, nargs="+", default=list(value))
        else:
            parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel (one torch thread each)")
    parser.add_argument("--out", type=Path, default=Path(".state/learning_check"), help="finished runs (resume)")
    parser.add_argument("--table", type=Path, default=Path("benchmarks/results/learning_check.json"))
    parser.add_argument("--render", type=Path, default=None, help="print the markdown table of a results JSON and exit")
    args = vars(parser.parse_args())
    if args["render"] is not None:
        print(render_markdown(json.loads(args["render"].read_text())))
        return
    seeds, arms, jobs, out, table_path, _ = (args.pop(k) for k in ("seeds", "arms", "jobs", "out", "table", "render"))
    args["lr_sweep"] = tuple(args["lr_sweep"])
    started = time.perf_counter()
    table = run(replace(defaults, **args), seeds, tuple(arms), out, jobs)
    table["wall_s"] = round(time.perf_counter() - started, 1)
    table_path.parent.mkdir(parents=True, exist_ok=True)
    table_path.write_text(json.dumps(table, indent=2))
    print(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
