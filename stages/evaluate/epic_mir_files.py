"""The official EPIC-KITCHENS-100 retrieval annotation files: ``EPIC_100_retrieval_test.csv`` (one row per test
clip, with its verb and noun classes) and ``EPIC_100_retrieval_test_sentence.csv`` (the caption queries). A bad file
raises a ValueError naming the file, the row, the column and what was expected."""
from __future__ import annotations

import ast
import csv
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

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


class CsvRow:
    """Typed access to one CSV record; every failure names the file, the row and the column."""

    def __init__(self, path: Path, number: int, line: int, record: dict[str | None, str | None]):
        self.path, self.number, self.line, self.record = path, number, line, record

    def fail(self, column: str, expected: str) -> ValueError:
        return ValueError(f"{self.path}: row {self.number} (line {self.line}), column {column!r}: expected {expected}, "
                          f"got {self.record.get(column)!r}")

    def text(self, column: str) -> str:
        value = self.record[column]
        assert value is not None  # short rows are rejected before any cell is read
        if not value.strip():
            raise self.fail(column, "a non-empty value")
        return value

    def integer(self, column: str) -> int:
        try:
            return int(self.text(column).strip())
        except ValueError:
            raise self.fail(column, "an integer") from None

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


def csv_records(path: Path, required: Sequence[str],
             alternatives: Sequence[Sequence[str]] = ()) -> Iterable[tuple[CsvRow, tuple[str, ...]]]:
    """Yield each data row of ``path`` and the column set it matched (``required`` or one of ``alternatives``)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path} not found; fix the path in the config")
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames
        if not header:
            raise ValueError(f"{path}: empty file; expected a header with columns {list(required)}")
        header = [name.strip() for name in header]
        reader.fieldnames = header
        columns = next((tuple(c) for c in (required, *alternatives) if set(c) <= set(header)), None)
        if columns is None:
            missing = [c for c in required if c not in header]
            raise ValueError(f"{path}: missing column(s) {missing}; expected a header with columns {list(required)}, "
                             f"got {header}")
        for number, record in enumerate(reader, start=1):
            row = CsvRow(path, number, reader.line_num, record)
            if None in record:
                raise ValueError(f"{path}: row {number} (line {reader.line_num}): expected {len(header)} cells as in "
                                 f"the header, got {len(header) + len(record[None])}")
            short = [c for c in header if record[c] is None]
            if short:
                raise ValueError(f"{path}: row {number} (line {reader.line_num}), column {short[0]!r}: expected "
                                 f"{len(header)} cells as in the header, the row ends before this column")
            yield row, columns


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
    for row, _ in csv_records(path, TEST_COLUMNS):
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
    for row, (id_column, text_column) in csv_records(path, SENTENCE_COLUMNS, [_LEGACY_SENTENCE_COLUMNS]):
        sentence = EpicRetrievalSentence(narration_id=row.text(id_column).strip(), narration=row.text(text_column))
        _unique(row, seen, sentence.narration_id, id_column)
        sentences.append(sentence)
    return sentences
