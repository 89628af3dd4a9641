"""Where the videos come from: the dataset adapter kind, its root and its annotation files."""
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from pipeline.config.base import Section

SourceKind = Literal["folder", "csv", "ek100", "ssv2", "charades_ego", "egtea"]
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
