"""Which format an upload is in, judged by its first bytes rather than its name."""

from __future__ import annotations

from typing import Literal

from service.domain.datasets.decoding import UTF8_BOM
from service.domain.datasets.tables import sniff_delimiter

SourceFormat = Literal["jsonl", "csv", "tsv", "json", "xlsx"]
RequestedFormat = Literal["auto", "jsonl", "csv", "tsv", "json", "xlsx"]
SOURCE_FORMATS: tuple[SourceFormat, ...] = ("jsonl", "csv", "tsv", "json", "xlsx")

ZIP_MAGIC = b"PK\x03\x04"
# Enough to hold any sensible header line of a table.
SNIFF_BYTES = 64 * 1024


def detect_format(head: bytes) -> SourceFormat:
    """The format of a file starting with `head` (its first SNIFF_BYTES or fewer).

    `[` first means a JSON array and `{` JSONL (spaces and a UTF-8 BOM
    skipped); a ZIP signature means a spreadsheet; anything else is a table
    whose header line decides between tabs and commas. An empty file counts
    as JSONL, which then reports too few examples.
    """
    if head.startswith(ZIP_MAGIC):
        return "xlsx"
    body = head.removeprefix(UTF8_BOM).lstrip(b" \t\r\n")
    if not body or body.startswith(b"{"):
        return "jsonl"
    if body.startswith(b"["):
        return "json"
    header = body.split(b"\n", 1)[0].decode("utf-8", errors="replace")
    return "tsv" if sniff_delimiter(header) == "\t" else "csv"
