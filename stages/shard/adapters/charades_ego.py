"""`charades_ego`: Charades-Ego (first-person videos) from CharadesEgo_v1_train_only1st.csv and
CharadesEgo_v1_test_only1st.csv, whose ``actions`` field reads ``c092 11.90 21.20;c147 0.00 12.60``.

Training clips are the action segments, labelled with every class whose segment overlaps them;
test clips are whole videos with all their classes (the standard video-level mAP protocol).
"""
from __future__ import annotations

from stages.shard.adapters.base import (
    AdapterResult,
    AnnotationError,
    ClipSpec,
    index_videos,
    read_csv_rows,
    require_file,
    safe_key,
)
from stages.shard.source_config import SourceConfig

NUM_CLASSES = 157
SPLIT_FILES = {"train": "CharadesEgo_v1_train_only1st.csv", "test": "CharadesEgo_v1_test_only1st.csv"}
CLASS_FILE = "Charades_v1_classes.txt"


def parse_actions(field: str, where: str) -> list[tuple[int, float, float]]:
    segments = []
    for part in filter(None, (p.strip() for p in (field or "").split(";"))):
        tokens = part.split()
        if len(tokens) != 3 or not tokens[0].startswith("c"):
            raise AnnotationError(f"{where}: action {part!r} is not 'cNNN start end'")
        try:
            cls, start, end = int(tokens[0][1:]), float(tokens[1]), float(tokens[2])
        except ValueError:
            raise AnnotationError(f"{where}: action {part!r} is not 'cNNN start end'") from None
        if not 0 <= cls < NUM_CLASSES:
            raise AnnotationError(f"{where}: class c{cls:03d} is outside c000..c{NUM_CLASSES - 1}")
        segments.append((cls, start, end))
    return segments


def _class_names(folder) -> dict[int, str]:
    path = folder / CLASS_FILE
    if not path.is_file():
        return {}
    names = {}
    for line in path.read_text().splitlines():
        if line.strip():
            code, _, name = line.strip().partition(" ")
            names[int(code[1:])] = name
    return names


def list_clips(source: SourceConfig) -> AdapterResult:
    folder = source.annotations
    videos = index_videos(source.root, source.extensions)
    names = _class_names(folder)
    clips, files = [], []
    for split, filename in SPLIT_FILES.items():
        path = require_file(folder / filename, f"Charades-Ego {split} annotations")  # type: ignore[operator]
        files.append(path)
        for line, row in enumerate(read_csv_rows(path, ["id", "actions"]), start=2):
            vid, where = row["id"].strip(), f"{path}:{line}"
            segments = parse_actions(row["actions"], where)
            video = videos.get(vid)
            if split == "test":
                classes = tuple(sorted({c for c, _, _ in segments}))
                clips.append(ClipSpec(key=safe_key(vid), source=video, source_name=f"{vid}.mp4", split=split,
                                      label=classes[0] if classes else -1, labels=classes,
                                      narration=row.get("descriptions", "").strip()))
                continue
            for i, (cls, start, end) in enumerate(segments):
                if end <= start:
                    continue  # zero-length segments exist in the official files
                overlapping = tuple(sorted({c for c, s, e in segments if s < end and e > start}))
                clips.append(ClipSpec(key=safe_key(f"{vid}_{i:03d}"), source=video, source_name=f"{vid}.mp4",
                                      start=start, end=end, split=split, label=cls, label_name=names.get(cls, ""),
                                      labels=overlapping, narration=names.get(cls, "")))
    if (folder / CLASS_FILE).is_file():  # type: ignore[operator]
        files.append(folder / CLASS_FILE)  # type: ignore[operator]
    return AdapterResult(clips, files)
