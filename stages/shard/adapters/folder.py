"""`folder`: every video under the root; the parent folder name is the label.

A top-level folder named train/val/validation/test sets the split (``root/train/<label>/<video>``).
Videos directly in the root, or in a split folder, are unlabelled and cut into windows.
"""
from __future__ import annotations

from stages.shard.adapters.base import AdapterResult, AnnotationError, ClipSpec, safe_key
from stages.shard.source_config import SourceConfig

SPLIT_FOLDERS = {"train": "train", "val": "validation", "validation": "validation", "test": "test"}


def list_clips(source: SourceConfig) -> AdapterResult:
    if not source.root.is_dir():
        raise AnnotationError(f"data.source.root {source.root} is not a folder of videos")
    exts = {e.lower() for e in source.extensions}
    videos = sorted(p for p in source.root.rglob("*") if p.is_file() and p.suffix.lower() in exts)
    entries = []
    for path in videos:
        parts = path.relative_to(source.root).parts
        split = source.split
        if len(parts) > 1 and parts[0].lower() in SPLIT_FOLDERS:
            split, parts = SPLIT_FOLDERS[parts[0].lower()], parts[1:]
        label_name = parts[-2] if len(parts) > 1 else ""
        entries.append((path, split, label_name))
    names = sorted({label for _, _, label in entries if label})
    clips = [
        ClipSpec(key=safe_key(str(path.relative_to(source.root).with_suffix(""))), source=path,
                 source_name=str(path.relative_to(source.root)), split=split,
                 label=names.index(label) if label else -1, label_name=label, windowed=not label)
        for path, split, label in entries
    ]
    return AdapterResult(clips)
