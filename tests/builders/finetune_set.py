"""A tiny sharded set of generated motions and the finetune settings that learn it in seconds, shared by the
finetune and evaluate tests."""

from __future__ import annotations

from pathlib import Path

import torch

from fils_model.config import ModelConfig
from fils_model.encoder import VideoEncoder
from fils_model.export import export_videomae
from pipeline.runner import run_pipeline
from pipeline.samples import SampleSettings, write_samples
from stages import registry
from stages.config import FilsConfig
from tests.helpers import make_config

TINY = {"size": "tiny", "img_size": 32, "patch_size": 8, "num_frames": 8}
CLASSES = 5


def finetune_section(**overrides):
    section = {"benchmark": "motion", "init": "random", "model": TINY, "head": {"num_classes": CLASSES},
               "epochs": 30, "warmup_epochs": 1, "global_batch_size": 8, "model_ema": False,
               "optim": {"base_lr": 0.15}, "mix": {"mixup": 0.8, "cutmix": 1.0, "prob": 0.5},
               "data": {"augment": {"flip": False, "scale": [0.6, 1.0]}, "sampling": {"stride": 2}},
               "loader": {"workers": 0}, "launch": {"nproc_per_node": 1}}
    return section | overrides


def with_sections(cfg: FilsConfig, workdir: Path, **sections) -> FilsConfig:
    tree = cfg.model_dump(mode="json") | {"workdir": str(workdir)} | sections
    return FilsConfig.model_validate(tree)


def build_workdir(root: Path) -> FilsConfig:
    """8 generated clips per motion (6 train, 2 validation), sharded at 40 px."""
    samples = root / "samples"
    write_samples(samples, SampleSettings(clips_per_class=8, frames=16, width=64, height=48, real=False))
    cfg = make_config(root / "work", samples, shard={"short_side": 40, "window_s": 3.0},
                      evaluate={"views": {"temporal": 2, "spatial": 1}, "sampling": {"stride": 2}})
    run_pipeline(registry(), cfg, ["shard"])
    return cfg


def export_random_encoder(out: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    cfg = ModelConfig(**TINY)
    return export_videomae(VideoEncoder(cfg), cfg, out)
