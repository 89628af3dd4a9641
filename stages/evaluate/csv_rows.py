"""Annotation CSV files read row by row, with every error naming the file, the row, the column and what was
expected (the EK-100 retrieval files, class files, prompt files)."""
from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path


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


def csv_records(path: Path, required: Sequence[str], alternatives: Sequence[Sequence[str]] = (),
                row_type: type[CsvRow] = CsvRow) -> Iterable[tuple[CsvRow, tuple[str, ...]]]:
    """Yield each data row of ``path`` (as ``row_type``) and the column set it matched (``required`` or one of
    ``alternatives``)."""
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
            row = row_type(path, number, reader.line_num, record)
            if None in record:
                raise ValueError(f"{path}: row {number} (line {reader.line_num}): expected {len(header)} cells as in "
                                 f"the header, got {len(header) + len(record[None])}")
            short = [c for c in header if record[c] is None]
            if short:
                raise ValueError(f"{path}: row {number} (line {reader.line_num}), column {short[0]!r}: expected "
                                 f"{len(header)} cells as in the header, the row ends before this column")
            yield row, columns
