"""Where the videos come from: the dataset adapter kind, its root and its annotation files."""
from pathlib import Path

from pydantic import Field, model_validator

from pipeline.config.base import Section
from pipeline.plugins import Registry

# Dataset adapters: data.source.kind -> the adapter's ``list_clips(source)`` (stages/shard/adapters/).
ADAPTERS = Registry("data.source.kind", {
    "folder": "stages.shard.adapters.folder:list_clips",
    "csv": "stages.shard.adapters.csv_list:list_clips",
    "ek100": "stages.shard.adapters.ek100:list_clips",
    "ssv2": "stages.shard.adapters.ssv2:list_clips",
    "charades_ego": "stages.shard.adapters.charades_ego:list_clips",
    "egtea": "stages.shard.adapters.egtea:list_clips",
}, group="fils.dataset_adapters")
SourceKind = ADAPTERS.choices()
KINDS_NEEDING_ANNOTATIONS = {"csv", "ek100", "ssv2", "charades_ego", "egtea"}


class SourceConfig(Section):
    kind: SourceKind
    root: Path = Field(description="Folder holding the videos (paths in annotations are relative to it).")
    annotations: Path | None = Field(
        default=None,
        description="Annotation file or folder: the CSV list for `csv`, the folder with the official files "
        "for `ek100`, `ssv2`, `charades_ego` and `egtea`.",
    )
    splits: list[str] | None = Field(
        default=None, description="Keep only these splits (e.g. [train]); all splits when unset."
    )
    split: str = Field(default="train", description="Split given to every clip of a `folder` source.")
    fold: int = Field(default=1, ge=1, le=3, description="EGTEA Gaze+ split number (train_splitN / test_splitN).")
    extensions: list[str] = Field(
        default=[".mp4", ".avi", ".mkv", ".webm", ".mov", ".mpg", ".mpeg", ".m4v"],
        description="Video file extensions a `folder` source picks up.",
    )

    @model_validator(mode="after")
    def _annotations_present(self) -> "SourceConfig":
        if self.kind in KINDS_NEEDING_ANNOTATIONS and self.annotations is None:
            raise ValueError(
                f"data.source.kind={self.kind!r} needs data.source.annotations "
                "(the annotation file or the folder holding the official annotation files)"
            )
        return self


class DataConfig(Section):
    source: SourceConfig
