"""UTF-8 decoding that reports where it failed, in the file's own line numbers."""

from __future__ import annotations

import codecs
from collections.abc import Iterable, Iterator

from service.domain.datasets import issues as codes
from service.domain.datasets.issues import Issue

UTF8_BOM = codecs.BOM_UTF8
# The longest UTF-8 sequence is 4 bytes, so at most 3 can be an unfinished tail.
_MAX_UNFINISHED = 3


class UndecodableInput(Exception):
    """The input is not UTF-8; `issue` is the one `encoding` error to report."""

    def __init__(self, issue: Issue) -> None:
        super().__init__(issue.message)
        self.issue = issue


def undecodable_issue(
    data: bytes, error: UnicodeDecodeError, first_line: int, first_column: int = 1
) -> Issue:
    """The `encoding` error for `error`, raised while decoding `data`, whose first byte
    is byte `first_column` of line `first_line`."""
    line = first_line + data.count(b"\n", 0, error.start)
    newline = data.rfind(b"\n", 0, error.start)
    column = error.start - newline if newline >= 0 else first_column + error.start
    return Issue(
        line,
        None,
        codes.ENCODING,
        f"Line {line} is not valid UTF-8 (byte 0x{data[error.start]:02x} at byte {column} "
        "of the line). Save the file as UTF-8 and upload it again.",
    )


def decode_utf8_stream(chunks: Iterable[bytes]) -> Iterator[str]:
    """Decode byte chunks of any size (a character may straddle two), dropping a leading BOM.

    Raises UndecodableInput naming the line of the first invalid byte.
    """
    line = 1
    column = 1
    pending = b""
    first = True
    for chunk in chunks:
        data = pending + chunk
        if first:
            data = data.removeprefix(UTF8_BOM)
            first = False
        try:
            text = data.decode("utf-8")
            pending = b""
        except UnicodeDecodeError as exc:
            unfinished = exc.reason == "unexpected end of data" or exc.end == len(data)
            if not (unfinished and exc.start >= len(data) - _MAX_UNFINISHED):
                raise UndecodableInput(undecodable_issue(data, exc, line, column)) from None
            text = data[: exc.start].decode("utf-8")
            pending = data[exc.start :]
        consumed = len(data) - len(pending)
        newline = data.rfind(b"\n", 0, consumed)
        column = consumed - newline if newline >= 0 else column + consumed
        line += text.count("\n")
        if text:
            yield text
    if pending:
        error = UnicodeDecodeError("utf-8", pending, 0, len(pending), "unexpected end of data")
        raise UndecodableInput(undecodable_issue(pending, error, line, column))
