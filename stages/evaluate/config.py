"""Settings of the `evaluate` stage and of the nightly checkpoint sweep."""
from __future__ import annotations

from pathlib import Path

from pydantic import Field

from pipeline.config.base import Section
from pipeline.video.clip_config import DecodeBackend, SamplingConfig, ViewsConfig


class SweepConfig(Section):
    """What ``fils/nightly-eval`` evaluates: every checkpoint matched here that the results table lacks."""

    checkpoints: list[str] = Field(
        default=["pretrain/encoder", "pretrain/checkpoints/*.pt", "finetune"],
        description="Globs relative to the workdir (absolute ones allowed): VideoMAE-layout encoder folders or "
        "weights files and pretrain checkpoints (linear-probed with the finetune section's head and data), or "
        "fine-tuned classifier folders (evaluated as they are).",
    )
    probe_epochs: float = Field(default=30, gt=0, description="Linear-probe length for encoder checkpoints.")
    probe_lr: float | None = Field(default=None, gt=0, description="Probe base lr (per 256); default finetune's.")


class IntervalConfig(Section):
    """Percentile-bootstrap intervals over the evaluated clips (``stages.evaluate.bootstrap``)."""

    resamples: int = Field(default=1000, ge=0, description="Resampled clip sets (0: no intervals). Each scores "
                           "every metric once per set of weights: lower it for very large splits.")
    level: float = Field(default=0.95, gt=0, lt=1, description="Coverage of each interval.")
    seed: int = Field(default=0, description="Seed of the resampling (shared by every set of weights: paired).")


class EvaluateSection(Section):
    split: str = Field(default="validation", description="Shard split to evaluate on.")
    views: ViewsConfig = ViewsConfig()
    sampling: SamplingConfig = Field(
        default=SamplingConfig(jitter=False),
        description="Frames of one temporal view: `stride` (SSv2/EGTEA: frames `stride` apart) or `segment` "
        "(EK-100 TSN: the view's window split into equal parts); jitter is ignored (views are deterministic).",
    )
    batch_size: int = Field(default=4, ge=1, description="Clips per forward pass (each with all its views).")
    decode_backend: DecodeBackend = "auto"
    results_table: Path = Field(
        default=Path("results/results.parquet"), description="Cross-run results table (relative: under the "
        "workdir); outside the stage folder, which is replaced on every commit.",
    )
    plot_classes: int = Field(default=40, ge=2, description="Most frequent classes shown in per-class plots.")
    intervals: IntervalConfig = IntervalConfig()
    sweep: SweepConfig = SweepConfig()


SECTIONS = {"evaluate": (EvaluateSection, EvaluateSection())}  # the root config's section of this stage
