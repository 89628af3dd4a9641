"""Settings of the `evaluate` stage and of the nightly checkpoint sweep."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from pipeline.config.base import Section
from pipeline.video.clip_config import DecodeBackend, SamplingConfig, ViewsConfig


class ProbeSweepConfig(Section):
    """Linear probes trained side by side on the frozen-feature bank (one pass over the features, one probe per
    setting); the setting with the best headline metric on a held-out part of the training split is the result.
    The test split never chooses."""

    lrs: list[float] = Field(default=[1e-4, 3e-4, 1e-3, 3e-3, 1e-2], min_length=1,
                             description="Base learning rates (per 256 clips) to sweep.")
    weight_decays: list[float] = Field(default=[0.05], min_length=1, description="Weight decays to sweep (every "
                                       "lr with every weight decay).")
    epochs: float = Field(default=30, gt=0, description="Probe length, in passes over the training features.")
    holdout: float = Field(default=0.2, gt=0, lt=1, description="Fraction of the training clips held out to choose "
                           "the setting (by a hash of the clip key: the same clips for every checkpoint).")
    attentive: bool = Field(default=False, description="Also sweep attentive probes (V-JEPA's protocol) on the "
                            "encoder's tokens; needs evaluate.bank.tokens.")


class SweepConfig(Section):
    """What ``fils/nightly-eval`` evaluates: every checkpoint matched here that the results table lacks."""

    checkpoints: list[str] = Field(
        default=["pretrain/encoder", "pretrain/checkpoints/*.pt", "finetune"],
        description="Globs relative to the workdir (absolute ones allowed): VideoMAE-layout encoder folders or "
        "weights files and pretrain checkpoints (linear-probed with the finetune section's head and data), or "
        "fine-tuned classifier folders (evaluated as they are).",
    )
    probes: ProbeSweepConfig = ProbeSweepConfig()
    @model_validator(mode="before")
    @classmethod
    def _moved_settings(cls, data: Any) -> Any:
        moved = {"probe_lr": "evaluate.sweep.probes.lrs (a list)", "probe_epochs": "evaluate.sweep.probes.epochs"}
        found = [name for name in moved if isinstance(data, dict) and name in data]
        if found:
            raise ValueError("; ".join(f"evaluate.sweep.{name} moved to {moved[name]}" for name in found)
                             + ": the sweep now trains several probe settings and chooses on held-out training clips")
        return data

    alert_margin: float = Field(default=0.02, ge=0, description="The sweep fails (after recording every result) "
                                "when a checkpoint's headline metric falls more than this (absolute, as a fraction) "
                                "below the best earlier checkpoint of the same protocol.")


class IntervalConfig(Section):
    """Percentile-bootstrap intervals over the evaluated clips (``stages.evaluate.bootstrap``)."""

    resamples: int = Field(default=1000, ge=0, description="Resampled clip sets (0: no intervals). Each scores "
                           "every metric once per set of weights: lower it for very large splits.")
    level: float = Field(default=0.95, gt=0, lt=1, description="Coverage of each interval.")
    seed: int = Field(default=0, description="Seed of the resampling (shared by every set of weights: paired).")


class ZeroShotConfig(Section):
    """Zero-shot classification in the language space (``stages.evaluate.zero_shot``): the clip's language
    embedding against class prompts embedded by the captions stage's text encoder."""

    enabled: bool = Field(default=True, description="Score zero-shot when the evaluated encoder has a language "
                          "projector (FILS pre-training exports one).")
    prompts: Path | None = Field(default=None, description="CSV head,class,prompt replacing the benchmark's "
                                 "templates for the classes it names (stages.evaluate.prompts).")
    verb_classes: Path | None = Field(default=None, description="EPIC_100_verb_classes.csv (EK-100 verb names).")
    noun_classes: Path | None = Field(default=None, description="EPIC_100_noun_classes.csv (EK-100 noun names).")


class RetrievalConfig(Section):
    """Video-text retrieval (``stages.evaluate.retrieval``, ``epic_mir``)."""

    enabled: bool = Field(default=True, description="Clip-to-caption and caption-to-clip retrieval against the "
                          "captions stage's captions of the evaluated split, when the encoder has a language "
                          "projector.")
    epic_test: Path | None = Field(default=None, description="EPIC_100_retrieval_test.csv: also score EK-100 "
                                   "multi-instance retrieval (mAP, nDCG) over its clips (keys: narration ids).")
    epic_sentences: Path | None = Field(default=None, description="EPIC_100_retrieval_test_sentence.csv (with "
                                        "epic_test).")


class BankConfig(Section):
    """The frozen-feature bank (``stages.evaluate.feature_bank``)."""

    tokens: bool = Field(default=False, description="Keep every output token (for attentive probes): large, "
                         "1568 x 768 fp16 per ViT-B view.")


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
    zero_shot: ZeroShotConfig = ZeroShotConfig()
    retrieval: RetrievalConfig = RetrievalConfig()
    bank: BankConfig = BankConfig()
    sweep: SweepConfig = SweepConfig()


SECTIONS = {"evaluate": (EvaluateSection, EvaluateSection())}  # the root config's section of this stage
