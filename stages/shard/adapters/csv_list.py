"""`csv`: a list of clips with columns ``path`` (relative to the root, or absolute) and optional
``label``, ``start``, ``end`` (seconds), ``text`` and ``split``."""
from __future__ import annotations

from pathlib import Path

from stages.shard.adapters.base import AdapterResult, AnnotationError, ClipSpec, read_csv_rows, require_file, safe_key
from stages.shard.source_config import SourceConfig


def _seconds(row: dict[str, str], column: str, where: str) -> float | None:
    value = (row.get(column) or "").strip()
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        raise AnnotationError(f"{where}: column {column!r} must be seconds, got {value!r}") from None


def list_clips(source: SourceConfig) -> AdapterResult:
    path = require_file(source.annotations, "clip list CSV")  # type: ignore[arg-type]
    rows = read_csv_rows(path, ["path"])
    raw_labels = [(r.get("label") or "").strip() for r in rows]
    numeric = all(lbl.lstrip("-").isdigit() for lbl in raw_labels if lbl)
    names = sorted({lbl for lbl in raw_labels if lbl}, key=lambda s: int(s) if numeric else s)
    clips, seen = [], set()
    for line, (row, label) in enumerate(zip(rows, raw_labels), start=2):
        where = f"{path}:{line}"
        rel = (row.get("path") or "").strip()
        if not rel:
            raise AnnotationError(f"{where}: empty path")
        video = Path(rel) if Path(rel).is_absolute() else source.root / rel
        start, end = _seconds(row, "start", where), _seconds(row, "end", where)
        if start is not None and end is not None and end <= start:
            raise AnnotationError(f"{where}: end {end} must be after start {start}")
        key = safe_key(str(Path(rel).with_suffix("")))
        if start is not None:
            key += f"_{int(round(start * 1000)):09d}"
        base, n = key, 1
        while key in seen:
            key, n = f"{base}_{n}", n + 1
        seen.add(key)
        clips.append(ClipSpec(
            key=key, source=video if video.is_file() else None, source_name=rel, start=start or 0.0, end=end,
            split=(row.get("split") or "").strip() or source.split,
            label=(int(label) if numeric else names.index(label)) if label else -1, label_name=label,
            narration=(row.get("text") or "").strip(),
            windowed=not label and start is None and end is None,
        ))
    return AdapterResult(clips, [path])
