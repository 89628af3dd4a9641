"""`ek100`: EPIC-KITCHENS-100 action segments from EPIC_100_train.csv / EPIC_100_validation.csv
(and EPIC_100_test_timestamps.csv when present, unlabelled).

The action label indexes the (verb_class, noun_class) pairs seen in train and validation, sorted, which is
the usual 3806-way action head; verb and noun classes are kept as they are.
"""
from __future__ import annotations

from stages.shard.adapters.base import (
    AdapterResult,
    AnnotationError,
    ClipSpec,
    index_videos,
    parse_timestamp,
    read_csv_rows,
    require_file,
    safe_key,
)
from stages.shard.source_config import SourceConfig

COLUMNS = ["narration_id", "participant_id", "video_id", "start_timestamp", "stop_timestamp"]
LABELLED = ["narration", "verb_class", "noun_class"]
SPLIT_FILES = {"train": "EPIC_100_train.csv", "validation": "EPIC_100_validation.csv"}
TEST_FILE = "EPIC_100_test_timestamps.csv"


def _int(row: dict[str, str], column: str, where: str) -> int:
    try:
        return int(row[column])
    except (TypeError, ValueError):
        raise AnnotationError(f"{where}: column {column!r} must be an integer, got {row.get(column)!r}") from None


def list_clips(source: SourceConfig) -> AdapterResult:
    folder = source.annotations
    tables = {split: (require_file(folder / name, f"EPIC-KITCHENS-100 {split} annotations"),  # type: ignore[operator]
                      read_csv_rows(folder / name, COLUMNS + LABELLED))  # type: ignore[operator]
              for split, name in SPLIT_FILES.items()}
    test_path = folder / TEST_FILE  # type: ignore[operator]
    if test_path.is_file():
        tables["test"] = (test_path, read_csv_rows(test_path, COLUMNS))
    pairs: set[tuple[int, int]] = set()
    for split in SPLIT_FILES:
        path, rows = tables[split]
        pairs.update((_int(r, "verb_class", f"{path}:{i}"), _int(r, "noun_class", f"{path}:{i}"))
                     for i, r in enumerate(rows, start=2))
    action_index = {pair: i for i, pair in enumerate(sorted(pairs))}
    videos = index_videos(source.root, source.extensions)
    clips = []
    for split, (path, rows) in tables.items():
        for line, row in enumerate(rows, start=2):
            where = f"{path}:{line}"
            start = parse_timestamp(row["start_timestamp"], where)
            end = parse_timestamp(row["stop_timestamp"], where)
            if end <= start:
                raise AnnotationError(f"{where}: stop_timestamp {row['stop_timestamp']} is not after start")
            verb, noun = (-1, -1) if split == "test" else (_int(row, "verb_class", where), _int(row, "noun_class", where))
            clips.append(ClipSpec(
                key=safe_key(row["narration_id"]), source=videos.get(row["video_id"]),
                source_name=f"{row['participant_id']}/videos/{row['video_id']}.MP4", start=start, end=end,
                split=split, label=action_index.get((verb, noun), -1),
                label_name=f"{row.get('verb', '')} {row.get('noun', '')}".strip(),
                verb_class=verb, noun_class=noun, narration=row.get("narration", "").strip(),
            ))
    return AdapterResult(clips, [p for p, _ in tables.values()])
