"""`egtea`: EGTEA Gaze+ trimmed action clips from action_idx.txt and the split lists
train_splitN.txt / test_splitN.txt, whose lines read ``<clip name> <action> <verb> <noun>`` (1-based)."""
from __future__ import annotations

from stages.shard.adapters.base import AdapterResult, AnnotationError, ClipSpec, index_videos, require_file, safe_key
from stages.shard.source_config import SourceConfig

NUM_ACTIONS = 106


def _action_names(path) -> dict[int, str]:
    names = {}
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        name, _, idx = line.strip().rpartition(" ")
        if not idx.isdigit():
            raise AnnotationError(f"{path}:{n}: expected '<action name> <index>', got {line!r}")
        names[int(idx) - 1] = name
    return names


def list_clips(source: SourceConfig) -> AdapterResult:
    folder = source.annotations
    index_path = require_file(folder / "action_idx.txt", "EGTEA Gaze+ action_idx.txt")  # type: ignore[operator]
    names = _action_names(index_path)
    videos = index_videos(source.root, source.extensions)
    clips, files = [], [index_path]
    for split, prefix in (("train", "train_split"), ("test", "test_split")):
        path = require_file(folder / f"{prefix}{source.fold}.txt", f"EGTEA Gaze+ {split} split list")  # type: ignore[operator]
        files.append(path)
        for n, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            tokens = line.split()
            if len(tokens) != 4 or not all(t.isdigit() for t in tokens[1:]):
                raise AnnotationError(f"{path}:{n}: expected '<clip name> <action> <verb> <noun>', got {line!r}")
            name, action, verb, noun = tokens[0], *(int(t) - 1 for t in tokens[1:])
            if not 0 <= action < NUM_ACTIONS:
                raise AnnotationError(f"{path}:{n}: action {action + 1} is outside 1..{NUM_ACTIONS}")
            clips.append(ClipSpec(key=safe_key(name), source=videos.get(name), source_name=f"{name}.mp4",
                                  split=split, label=action, label_name=names.get(action, ""), verb_class=verb,
                                  noun_class=noun, narration=names.get(action, "")))
    return AdapterResult(clips, files)
