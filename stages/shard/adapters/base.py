"""What every adapter returns, and the helpers they share."""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path


class AnnotationError(ValueError):
    """An annotation file is missing or not in the expected format; the message names file and fix."""


@dataclass(frozen=True)
class ClipSpec:
    key: str  # unique, dot-free (WebDataset splits keys at the first dot)
    source: Path | None  # None: the annotations name a video that is not on disk
    source_name: str  # how the annotations name the video (for reject rows)
    start: float = 0.0
    end: float | None = None  # None: to the end of the video
    split: str = "train"
    label: int = -1  # single-label class index (EPIC-KITCHENS: the action index), -1 when none
    label_name: str = ""
    verb_class: int = -1
    noun_class: int = -1
    labels: tuple[int, ...] = ()  # multi-label classes (Charades-Ego)
    narration: str = ""
    windowed: bool = False  # unlabelled long video: cut into fixed-length windows


@dataclass
class AdapterResult:
    clips: list[ClipSpec]
    annotation_files: list[Path] = field(default_factory=list)


_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def safe_key(text: str) -> str:
    return _UNSAFE.sub("_", text).strip("_") or "clip"


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise AnnotationError(f"{what} not found at {path}; put the official file there or fix data.source.annotations")
    return path


def find_file(folder: Path, names: list[str], what: str) -> Path:
    """The first of ``names`` present in ``folder``."""
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise AnnotationError(f"{what} not found in {folder} (looked for {', '.join(names)}); "
                          "download the official annotation files into that folder")


def read_csv_rows(path: Path, required: list[str]) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = reader.fieldnames or []
        missing = [c for c in required if c not in columns]
        if missing:
            raise AnnotationError(f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(columns) or 'none'}"
                                  f"; expected the official format with columns {', '.join(required)}")
        return list(reader)


def index_videos(root: Path, extensions: list[str]) -> dict[str, Path]:
    """Map each video's file stem to its path, searching ``root`` recursively (datasets nest differently)."""
    exts = {e.lower() for e in extensions}
    found: dict[str, Path] = {}
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() in exts and path.is_file():
            found.setdefault(path.stem, path)
    return found


def parse_timestamp(value: str, where: str) -> float:
    """``HH:MM:SS.fff`` (EPIC-KITCHENS) or plain seconds."""
    try:
        parts = [float(p) for p in value.strip().split(":")]
    except ValueError:
        raise AnnotationError(f"{where}: timestamp {value!r} is neither HH:MM:SS.fff nor seconds") from None
    seconds = 0.0
    for part in parts:
        seconds = seconds * 60 + part
    return seconds
