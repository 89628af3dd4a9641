"""`ssv2`: Something-Something-V2 from labels.json and the train/validation JSON lists of
``{id, label, template, placeholders}``; videos are ``<id>.webm``. The official file names
(something-something-v2-*.json) and the short ones (labels.json, train.json, ...) are both accepted."""
from __future__ import annotations

import json
from pathlib import Path

from stages.shard.adapters.base import AdapterResult, AnnotationError, ClipSpec, find_file, index_videos
from stages.shard.source_config import SourceConfig


def _load(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise AnnotationError(f"{path} is not valid JSON ({exc})") from None


def _names(split: str) -> list[str]:
    return [f"something-something-v2-{split}.json", f"{split}.json"]


def list_clips(source: SourceConfig) -> AdapterResult:
    folder: Path = source.annotations  # type: ignore[assignment]
    labels_path = find_file(folder, _names("labels"), "SSv2 labels.json")
    labels = _load(labels_path)
    if not isinstance(labels, dict):
        raise AnnotationError(f"{labels_path}: expected a mapping of template to class index")
    classes = {template: int(idx) for template, idx in labels.items()}
    files = [labels_path]
    videos = index_videos(source.root, [".webm", *source.extensions])
    clips = []
    for split in ("train", "validation", "test"):
        try:
            path = find_file(folder, _names(split), f"SSv2 {split} list")
        except AnnotationError:
            if split == "test":
                continue
            raise
        files.append(path)
        items = _load(path)
        if not isinstance(items, list):
            raise AnnotationError(f"{path}: expected a JSON list of {{id, label, template, placeholders}}")
        for n, item in enumerate(items):
            if not isinstance(item, dict) or "id" not in item:
                raise AnnotationError(f"{path}: entry {n} has no 'id'")
            vid = str(item["id"])
            label, name = -1, ""
            if split != "test":
                if "template" not in item:
                    raise AnnotationError(f"{path}: entry {n} (id {vid}) has no 'template'")
                name = item["template"].replace("[", "").replace("]", "")
                if name not in classes:
                    raise AnnotationError(f"{path}: entry {n} (id {vid}) template {name!r} is not in {labels_path.name}")
                label = classes[name]
            clips.append(ClipSpec(key=vid, source=videos.get(vid), source_name=f"{vid}.webm", split=split,
                                  label=label, label_name=name, narration=str(item.get("label", name))))
    return AdapterResult(clips, files)
