"""Question/answer tables (CSV, TSV, spreadsheet rows) turned into chat examples.

Line numbers are physical lines of the file, counted by line feeds: the
header is line 1 and a record is reported at the line where it starts, so a
quoted answer spanning three lines moves the next record three lines down.
For spreadsheets the line is the sheet's row number. Rows whose cells are all
empty are skipped (spreadsheets and editors leave them behind); a row with
an empty question or answer is an error naming its line and the column.
"""

from __future__ import annotations

import csv
import datetime as dt
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from service.domain.datasets import issues as codes
from service.domain.datasets.decoding import UTF8_BOM, UndecodableInput, undecodable_issue
from service.domain.datasets.examples import ConversionSettings, qa_example
from service.domain.datasets.issues import Issue


class TableSyntaxError(Exception):
    """The table cannot be read past this point (say an unterminated quote)."""

    def __init__(self, issue: Issue) -> None:
        super().__init__(issue.message)
        self.issue = issue


class MissingColumns(Exception):
    """The header lacks a mapped column; nothing below it can be converted."""

    def __init__(self, issues: list[Issue]) -> None:
        super().__init__("; ".join(issue.message for issue in issues))
        self.issues = issues


def sniff_delimiter(header_line: str) -> str:
    """Tab when the header has at least as many tabs as commas, else comma."""
    tabs = header_line.count("\t")
    return "\t" if tabs and tabs >= header_line.count(",") else ","


def _decoded_lines(raw_lines: Iterable[bytes]) -> Iterator[str]:
    # UTF-8 never uses the byte 0x0A inside a multi-byte character, so
    # decoding line by line is exact and pins a bad byte to its line.
    for number, raw in enumerate(raw_lines, start=1):
        data = raw.removeprefix(UTF8_BOM) if number == 1 else raw
        try:
            yield data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UndecodableInput(undecodable_issue(data, exc, number)) from None


def iter_delimited_rows(
    raw_lines: Iterable[bytes], delimiter: str
) -> Iterator[tuple[int, list[str]]]:
    """(starting line, cells) for every record of a CSV/TSV given as raw byte lines.

    Raises UndecodableInput for bytes that are not UTF-8 and TableSyntaxError
    for a malformed record.
    """
    # The default 128 KiB field cap would reject long answers the provider
    # accepts; the upload size limit already bounds a field.
    csv.field_size_limit(sys.maxsize)
    reader = csv.reader(_decoded_lines(raw_lines), delimiter=delimiter, strict=True)
    while True:
        start = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise TableSyntaxError(
                Issue(
                    start,
                    None,
                    codes.INVALID_TABLE,
                    f"The record starting on line {start} cannot be read: {exc}.",
                )
            ) from None
        yield start, cells


def cell_text(value: object) -> str:
    """A spreadsheet cell as the text a person sees in it."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    return str(value)


@dataclass(frozen=True)
class ColumnMapping:
    """Where the question, answer and optional system text sit in each row."""

    user: int
    assistant: int
    system: int | None
    user_name: str
    assistant_name: str

    @classmethod
    def from_header(
        cls, header: Sequence[object], settings: ConversionSettings, line: int = 1
    ) -> tuple[ColumnMapping | None, list[Issue]]:
        names = [cell_text(cell).strip() for cell in header]
        found: list[Issue] = []

        def locate(wanted: str) -> int | None:
            if wanted in names:
                return names.index(wanted)
            folded = [name.casefold() for name in names]
            if wanted.strip().casefold() in folded:
                return folded.index(wanted.strip().casefold())
            return None

        positions: dict[str, int | None] = {}
        options = (
            ("user_column", settings.user_column),
            ("assistant_column", settings.assistant_column),
            ("system_column", settings.system_column),
        )
        for option, wanted in options:
            if wanted is None:
                continue
            positions[wanted] = locate(wanted)
            if positions[wanted] is None:
                available = ", ".join(f'"{name}"' for name in names if name) or "none"
                found.append(
                    Issue(
                        line,
                        wanted,
                        codes.MISSING_COLUMN,
                        f'The header has no column "{wanted}" (columns: {available}). '
                        f"Set {option} to the header's name for it (the options user_column, "
                        "assistant_column and system_column map the columns).",
                    )
                )
        if found:
            return None, found
        user = positions[settings.user_column]
        assistant = positions[settings.assistant_column]
        if user is None or assistant is None:  # unreachable: missing columns returned above
            return None, found
        return (
            cls(
                user=user,
                assistant=assistant,
                system=None
                if settings.system_column is None
                else positions[settings.system_column],
                user_name=settings.user_column,
                assistant_name=settings.assistant_column,
            ),
            [],
        )

    def convert(
        self, cells: Sequence[object], line: int, settings: ConversionSettings
    ) -> tuple[dict[str, Any] | None, list[Issue]]:
        """The chat example for one row, or the errors of its empty cells."""

        def cell(index: int | None) -> str:
            if index is None or index >= len(cells):
                return ""
            return cell_text(cells[index])

        user, assistant = cell(self.user), cell(self.assistant)
        found = [
            Issue(line, name, codes.MISSING_CONTENT, f'Line {line}: the "{name}" cell is empty.')
            for name, text in ((self.user_name, user), (self.assistant_name, assistant))
            if not text.strip()
        ]
        if found:
            return None, found
        system = cell(self.system) if self.system is not None else None
        return qa_example(user, assistant, system, settings), []


def is_blank_row(cells: Sequence[object]) -> bool:
    return all(not cell_text(cell).strip() for cell in cells)


def iter_table_examples(
    rows: Iterable[tuple[int, Sequence[object]]], settings: ConversionSettings
) -> Iterator[tuple[int, dict[str, Any] | None, list[Issue]]]:
    """(line, chat example or None, issues) per data row; the first non-blank row is the header.

    Raises MissingColumns when the header lacks a mapped column.
    """
    mapping: ColumnMapping | None = None
    for line, cells in rows:
        if is_blank_row(cells):
            continue
        if mapping is None:
            mapping, problems = ColumnMapping.from_header(cells, settings, line)
            if mapping is None:
                raise MissingColumns(problems)
            continue
        example, problems = mapping.convert(cells, line, settings)
        yield line, example, problems
