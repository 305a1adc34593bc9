"""XLSX uploads, read safely.

A workbook is a ZIP archive of XML files, so a one-megabyte upload can
declare a gigabyte of XML (a decompression bomb), and openpyxl builds Python
objects for every shared string. Two defences, in this order:

1. `inspect_workbook` reads only the ZIP's central directory and refuses an
   archive whose members declare more than the inflated-size budget, inflate
   more than `max_ratio` times, or hold an oversized shared-strings table. The
   declared sizes are binding: Python's zipfile stops at a member's declared
   size and fails its CRC check if the data says otherwise.
2. `extract_rows` parses the first sheet in a child process whose address
   space is capped (RLIMIT_AS) and whose run time is bounded, writing each row
   as a JSON line `[row number, [cell texts]]`. Whatever a workbook does to
   openpyxl, the API and worker processes keep their memory.

`python -m service.datasets.spreadsheet SOURCE DEST --memory-bytes N` is the child.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from service.domain.datasets import issues as codes
from service.domain.datasets.issues import Issue
from service.domain.datasets.tables import cell_text

SHARED_STRINGS = "xl/sharedStrings.xml"
MAX_MEMBERS = 10_000
# Ratios are judged only for members big enough for a ratio to mean something.
RATIO_FLOOR_BYTES = 64 * 1024
EXIT_UNREADABLE = 3
EXIT_OUT_OF_MEMORY = 4


@dataclass(frozen=True, slots=True)
class WorkbookLimits:
    max_inflated_bytes: int = 256 * 1024 * 1024
    max_ratio: float = 200.0
    max_shared_strings_bytes: int = 64 * 1024 * 1024
    memory_bytes: int = 1024 * 1024 * 1024
    timeout_seconds: float = 600.0


class UnreadableWorkbook(Exception):
    def __init__(self, issue: Issue) -> None:
        super().__init__(issue.message)
        self.issue = issue


def _refuse(message: str) -> UnreadableWorkbook:
    return UnreadableWorkbook(Issue(None, None, codes.INVALID_TABLE, message))


def _mib(size: float) -> str:
    return f"{size / (1024 * 1024):.0f} MiB"


def inspect_workbook(source: Path, limits: WorkbookLimits) -> None:
    """Raise UnreadableWorkbook when the archive is not a workbook or is too big inflated."""
    try:
        with zipfile.ZipFile(source) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise _refuse(f"The spreadsheet is not a readable XLSX workbook ({exc}).") from None
    if len(members) > MAX_MEMBERS:
        raise _refuse(f"The workbook holds {len(members)} parts; at most {MAX_MEMBERS} are read.")
    names = {member.filename for member in members}
    if "[Content_Types].xml" not in names or not any(n.startswith("xl/") for n in names):
        raise _refuse("The file is a ZIP archive but not an XLSX workbook (no xl/ parts).")
    inflated = sum(member.file_size for member in members)
    if inflated > limits.max_inflated_bytes:
        raise _refuse(
            f"The workbook inflates to {_mib(inflated)}; at most "
            f"{_mib(limits.max_inflated_bytes)} are read. Save it as CSV, or split it."
        )
    for member in members:
        if member.file_size >= RATIO_FLOOR_BYTES:
            ratio = member.file_size / max(1, member.compress_size)
            if ratio > limits.max_ratio:
                raise _refuse(
                    f"The workbook part {member.filename} inflates {ratio:.0f} times "
                    f"(at most {limits.max_ratio:.0f}); it looks like a decompression bomb."
                )
        if member.filename == SHARED_STRINGS and member.file_size > limits.max_shared_strings_bytes:
            raise _refuse(
                f"The workbook's shared strings take {_mib(member.file_size)}; at most "
                f"{_mib(limits.max_shared_strings_bytes)} are read."
            )


def extract_rows(
    source: Path, dest: Path, limits: WorkbookLimits, *, deadline: float | None = None
) -> None:
    """Write the first sheet's rows to `dest` (one JSON line per row) from a bounded child.

    It may run until `deadline` (a time.monotonic() value), at most `limits.timeout_seconds`.
    """
    timeout = limits.timeout_seconds
    if deadline is not None:
        timeout = max(0.1, min(timeout, deadline - time.monotonic()))
    try:
        # Our own interpreter and module; the paths are scratch files we named.
        finished = subprocess.run(  # noqa: S603
            [
                sys.executable,
                "-m",
                "service.datasets.spreadsheet",
                str(source),
                str(dest),
                "--memory-bytes",
                str(limits.memory_bytes),
            ],
            capture_output=True,
            timeout=timeout,
            check=False,
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        )
    except subprocess.TimeoutExpired:
        raise _refuse(
            f"Reading the workbook took longer than {timeout:.0f} s; "
            "save it as CSV and upload that."
        ) from None
    if finished.returncode == 0:
        return
    if finished.returncode == EXIT_UNREADABLE:
        reason = finished.stderr.decode("utf-8", "replace").strip().splitlines()[-1:]
        raise _refuse(f"The spreadsheet cannot be read: {reason[0] if reason else 'unknown'}.")
    if finished.returncode == EXIT_OUT_OF_MEMORY or finished.returncode < 0:
        raise _refuse(
            f"Reading the workbook needs more than {_mib(limits.memory_bytes)} of memory; "
            "save it as CSV and upload that."
        )
    raise RuntimeError(
        f"the spreadsheet reader exited with {finished.returncode}: "
        + finished.stderr.decode("utf-8", "replace")[-2000:]
    )


def read_rows(lines: Iterable[bytes]) -> Iterator[tuple[int, list[str]]]:
    """The rows `extract_rows` wrote (the lines of its file), as (row number, cell texts)."""
    for raw in lines:
        number, cells = json.loads(raw)
        yield int(number), cells


def _write_rows(source: Path, dest: Path) -> None:
    import openpyxl  # only the child process pays for it
    from openpyxl.utils.exceptions import InvalidFileException

    # A file object, not a path: openpyxl judges paths by their extension, and
    # uploads wait under a scratch name.
    with source.open("rb") as handle, dest.open("w", encoding="utf-8") as out:
        try:
            workbook = openpyxl.load_workbook(handle, read_only=True, data_only=True)
        except (zipfile.BadZipFile, InvalidFileException, KeyError, ValueError) as exc:
            print(f"it is not a valid XLSX workbook ({exc})", file=sys.stderr)  # noqa: T201
            raise SystemExit(EXIT_UNREADABLE) from None
        try:
            if not workbook.worksheets:
                print("the workbook has no worksheet", file=sys.stderr)  # noqa: T201
                raise SystemExit(EXIT_UNREADABLE)
            sheet = workbook.worksheets[0]
            first_row = sheet.min_row or 1
            for offset, row in enumerate(sheet.iter_rows(values_only=True)):
                cells = [cell_text(value) for value in row]
                out.write(json.dumps([first_row + offset, cells], ensure_ascii=False) + "\n")
        finally:
            workbook.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="Read an XLSX sheet's rows under a memory cap.")
    parser.add_argument("source", type=Path)
    parser.add_argument("dest", type=Path)
    parser.add_argument("--memory-bytes", type=int, required=True)
    args = parser.parse_args()
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (args.memory_bytes, args.memory_bytes))
    try:
        _write_rows(args.source, args.dest)
    except MemoryError:
        raise SystemExit(EXIT_OUT_OF_MEMORY) from None


if __name__ == "__main__":
    main()
