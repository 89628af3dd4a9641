"""The official EPIC-KITCHENS-100 retrieval annotation files: ``EPIC_100_retrieval_test.csv`` (one row per test
clip, with its verb and noun classes) and ``EPIC_100_retrieval_test_sentence.csv`` (the caption queries). A bad file
raises a ValueError naming the file, the row, the column and what was expected."""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

from stages.evaluate.csv_rows import CsvRow, csv_records

TEST_COLUMNS = ("narration_id", "participant_id", "video_id", "narration_timestamp", "start_timestamp",
                "stop_timestamp", "start_frame", "stop_frame", "narration", "verb", "verb_class", "noun", "noun_class",
                "all_nouns", "all_noun_classes")
"""Columns required in ``EPIC_100_retrieval_test.csv`` (the official file also starts with an integer ``uid``, which
is read when present)."""

SENTENCE_COLUMNS = ("narration_id", "narration")
"""Columns of ``EPIC_100_retrieval_test_sentence.csv``. An earlier revision of the file headed the same two columns
``index,sentence``; that header is accepted too."""

_LEGACY_SENTENCE_COLUMNS = ("index", "sentence")
_TIMESTAMP = re.compile(r"^(\d+):([0-5]\d):([0-5]\d(?:\.\d+)?)$")


def timestamp_seconds(timestamp: str) -> float:
    """``"HH:MM:SS.ff"`` (any number of fractional digits) -> seconds."""
    match = _TIMESTAMP.match(timestamp)
    if match is None:
        raise ValueError(f"expected a timestamp HH:MM:SS.ff, got {timestamp!r}")
    hours, minutes, seconds = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


@dataclass(frozen=True)
class EpicRetrievalClip:
    """One row of ``EPIC_100_retrieval_test.csv``: an action segment and its narration's classes."""

    uid: int | None
    narration_id: str
    participant_id: str
    video_id: str
    narration_timestamp: str
    start_timestamp: str
    stop_timestamp: str
    start_frame: int
    stop_frame: int
    narration: str
    verb: str
    verb_class: int
    noun: str
    noun_class: int
    all_nouns: tuple[str, ...]
    all_noun_classes: tuple[int, ...]

    @property
    def start_seconds(self) -> float:
        return timestamp_seconds(self.start_timestamp)

    @property
    def stop_seconds(self) -> float:
        return timestamp_seconds(self.stop_timestamp)


@dataclass(frozen=True)
class EpicRetrievalSentence:
    """One row of ``EPIC_100_retrieval_test_sentence.csv``: a caption query and the clip row it was taken from."""

    narration_id: str
    narration: str


class EpicRow(CsvRow):
    """A row of the EK-100 retrieval files: timestamps and Python list literals besides text and integers."""

    def timestamp(self, column: str) -> str:
        value = self.text(column).strip()
        if _TIMESTAMP.match(value) is None:
            raise self.fail(column, "a timestamp HH:MM:SS.ff")
        return value

    def literal_list(self, column: str, kind: type, what: str) -> tuple:
        expected = f"a non-empty list literal of {what} such as {'[10, 4]' if kind is int else repr(['plate'])}"
        try:
            value = ast.literal_eval(self.text(column).strip())
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            raise self.fail(column, expected) from None
        if (not isinstance(value, list) or not value
                or any(isinstance(v, bool) or not isinstance(v, kind) for v in value)):
            raise self.fail(column, expected)
        return tuple(value)


def _unique(row: CsvRow, seen: dict[str, int], narration_id: str, column: str) -> None:
    if narration_id in seen:
        raise row.fail(column, f"a narration id not already used (row {seen[narration_id]} has it)")
    seen[narration_id] = row.number


def read_epic_retrieval_test(path: str | Path) -> list[EpicRetrievalClip]:
    """Parse ``EPIC_100_retrieval_test.csv`` (or the train file, same columns) into :class:`EpicRetrievalClip` rows.

    Needs the columns in :data:`TEST_COLUMNS` (any order, extra columns ignored; ``uid`` is read when present).
    ``all_nouns`` / ``all_noun_classes`` are Python list literals as in the official file (``"['pizza', 'plate']"``,
    ``"[91, 2]"``), read with :func:`ast.literal_eval` (literals only, nothing is executed). Raises ``ValueError``
    naming the file, the row and the column on a missing column, an empty or unparsable cell, a row with the wrong
    number of cells or a repeated ``narration_id``.
    """
    path = Path(path)
    clips, seen = [], {}
    for row, _ in csv_records(path, TEST_COLUMNS, row_type=EpicRow):
        clip = EpicRetrievalClip(
            uid=row.integer("uid") if "uid" in row.record else None,
            narration_id=row.text("narration_id").strip(),
            participant_id=row.text("participant_id").strip(),
            video_id=row.text("video_id").strip(),
            narration_timestamp=row.timestamp("narration_timestamp"),
            start_timestamp=row.timestamp("start_timestamp"),
            stop_timestamp=row.timestamp("stop_timestamp"),
            start_frame=row.integer("start_frame"),
            stop_frame=row.integer("stop_frame"),
            narration=row.text("narration"),
            verb=row.text("verb"),
            verb_class=row.integer("verb_class"),
            noun=row.text("noun"),
            noun_class=row.integer("noun_class"),
            all_nouns=row.literal_list("all_nouns", str, "strings"),
            all_noun_classes=row.literal_list("all_noun_classes", int, "integers"),
        )
        _unique(row, seen, clip.narration_id, "narration_id")
        clips.append(clip)
    return clips


def read_epic_retrieval_sentences(path: str | Path) -> list[EpicRetrievalSentence]:
    """Parse ``EPIC_100_retrieval_test_sentence.csv`` into :class:`EpicRetrievalSentence` rows, in file order.

    The official header is ``narration_id,narration`` (:data:`SENTENCE_COLUMNS`); the earlier ``index,sentence``
    header of the same file is read the same way. ``narration_id`` names the clip row of the test file whose
    narration (and classes) the caption is. Errors as in :func:`read_epic_retrieval_test`.
    """
    path = Path(path)
    sentences, seen = [], {}
    for row, (id_column, text_column) in csv_records(path, SENTENCE_COLUMNS, [_LEGACY_SENTENCE_COLUMNS], EpicRow):
        sentence = EpicRetrievalSentence(narration_id=row.text(id_column).strip(), narration=row.text(text_column))
        _unique(row, seen, sentence.narration_id, id_column)
        sentences.append(sentence)
    return sentences
