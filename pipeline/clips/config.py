"""Settings of the training loader: the data stream (part of a stage's result) and the DataLoader (not)."""
from __future__ import annotations

from pydantic import Field

from pipeline.config.base import Section
from pipeline.video.clip_config import AugmentConfig, DecodeBackend, SamplingConfig


class ClipStreamConfig(Section):
    """Which clips a training stream reads and how it samples, crops and shuffles them; a stage's data section
    extends it (its defaults may differ)."""

    split: str = Field(default="train", description="Shard split to train on.")
    sampling: SamplingConfig = SamplingConfig()
    augment: AugmentConfig = AugmentConfig()
    interleave_shards: int = Field(
        default=4, ge=1, description="Shards each loader stream reads at once, drawing samples from them at random "
        "(more mixing when a split was not shuffled across shards by the shard stage).",
    )
    shuffle_buffer: int = Field(
        default=256, ge=1, description="Raw samples (encoded clips, in memory) in each loader stream's shuffle buffer."
    )
    repeated_views: int = Field(
        default=1, ge=1, description="Training views drawn from each decoded clip (repeated sampling, as in MAE-ST "
        "and VideoMAE V2): each its own crop, flip and mask, one decode for all. A batch holds batch/views clips; "
        "the views of a clip share its caption, which ActCLIP treats as positives of each other. Epochs stay "
        "effective epochs (samples seen / clips, MAE-ST's convention): the same steps and compute, each clip decoded "
        "epochs/views times.",
    )
    decode_backend: DecodeBackend = "auto"


class LoaderConfig(Section):
    """DataLoader settings (not part of the fingerprint)."""

    workers: int = Field(default=4, ge=0, description="DataLoader worker processes per rank (0: decode inline).")
    prefetch_factor: int = Field(default=2, ge=1, description="Batches prefetched per worker.")
    decode_timeout_s: float = Field(
        default=60.0, gt=0, description="Per-sample guard: a clip whose decoding takes longer is skipped as corrupt "
        "(works when the decoder returns to Python; a decoder stuck in native code is caught by `stall_timeout_s`).",
    )
    stall_timeout_s: float = Field(
        default=1800.0, gt=0, description="Fail the attempt when a loader worker delivers no batch for this long "
        "(a hung decoder); rerunning resumes from the last checkpoint.",
    )
