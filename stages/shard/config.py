"""Settings of the `shard` stage: probing, re-encoding, windowing and shard sizes."""
from pydantic import Field

from pipeline.config.base import Section
from stages.shard.source_config import DataConfig


class ShardConfig(Section):
    reencode: bool = Field(default=True, description="Re-encode every clip to constant-rate H.264.")
    short_side: int = Field(default=320, ge=16, le=4096, description="Short side of re-encoded clips (never upscaled).")
    fps: float | None = Field(default=None, gt=0, le=240, description="Output frame rate; None keeps the source rate.")
    gop: int = Field(default=16, ge=1, le=600, description="Key-frame interval in frames (short = fast random access).")
    crf: int = Field(default=23, ge=0, le=51, description="x264 constant rate factor.")
    preset: str = Field(default="veryfast", description="x264 preset.")
    window_s: float = Field(default=10.0, gt=0, description="Unlabelled long videos are cut into windows this long.")
    min_clip_s: float = Field(default=0.5, gt=0, description="Windows of unlabelled videos shorter than this (the last one) are dropped; annotated clips are never dropped for length.")
    max_clip_s: float | None = Field(default=None, gt=0, description="Longer labelled clips are cut to this length.")
    target_shard_mb: float = Field(default=256.0, gt=0, description="Target size of one tar shard.")
    max_clips_per_shard: int = Field(default=1000, ge=1)
    min_shards: int = Field(default=1, ge=1, description="At least this many shards per split (ranks x loader workers).")
    shuffle_splits: list[str] = Field(
        default=["train"], description="Splits whose clips are shuffled across shards (seeded, by key) so that every "
        "shard is a random sample; other splits are stored in key order. Training splits belong here: in key order "
        "a shard holds neighbouring clips of one video, and a contrastive batch of them has false negatives.")
    shuffle_seed: int = Field(default=0, description="Seed of the shuffle of `shuffle_splits`.")


# The root config's sections this stage owns: where the videos come from (required) and how they are sharded.
SECTIONS = {"data": (DataConfig, ...), "shard": (ShardConfig, ShardConfig())}
