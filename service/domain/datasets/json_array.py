"""A JSON array of examples, read element by element from text chunks.

`json.load` would hold the whole document and every parsed element at once;
this keeps only the current window of text, so memory follows the size of
the largest element rather than of the file. Elements are numbered from 1,
and that number is the "line" reported for their issues; a syntax error also
names the physical line and column of the file in its message.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator

from service.domain.datasets import issues as codes
from service.domain.datasets.issues import Issue

_WHITESPACE = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()
# How close to the end of the window a decode error must be to mean "the
# element continues in the next chunk" rather than "the JSON is wrong":
# the longest thing that can be cut is a \uXXXX escape.
_TRUNCATION_MARGIN = 6


class JsonArrayError(Exception):
    def __init__(self, issue: Issue) -> None:
        super().__init__(issue.message)
        self.issue = issue


class _Window:
    """The unread text, with the file position of its first character."""

    def __init__(self, chunks: Iterable[str]) -> None:
        self._chunks = iter(chunks)
        self.text = ""
        self.pos = 0
        self.eof = False
        self._line = 1  # file line of text[0]
        self._column = 1  # file column of text[0]

    def fill(self) -> bool:
        """Append the next chunk, dropping what was read; False at end of input."""
        chunk = next(self._chunks, None)
        if chunk is None:
            self.eof = True
            return False
        consumed = self.text[: self.pos]
        newlines = consumed.count("\n")
        if newlines:
            self._line += newlines
            self._column = len(consumed) - consumed.rfind("\n")
        else:
            self._column += len(consumed)
        self.text = self.text[self.pos :] + chunk
        self.pos = 0
        return True

    def skip_whitespace(self) -> str:
        """The next non-space character ("" at end of input), without consuming it."""
        while True:
            match = _WHITESPACE.match(self.text, self.pos)
            self.pos = match.end() if match else self.pos
            if self.pos < len(self.text):
                return self.text[self.pos]
            if not self.fill():
                return ""

    def location(self, index: int) -> tuple[int, int]:
        before = self.text[:index]
        newlines = before.count("\n")
        if newlines:
            return self._line + newlines, index - before.rfind("\n")
        return self._line, self._column + index


def _syntax_error(window: _Window, element: int, index: int, reason: str) -> JsonArrayError:
    line, column = window.location(index)
    return JsonArrayError(
        Issue(
            element,
            None,
            codes.INVALID_JSON,
            f"The JSON array is not valid JSON at element {element}: {reason} "
            f"(line {line}, column {column}).",
        )
    )


def iter_json_array(chunks: Iterable[str]) -> Iterator[tuple[int, object, int]]:
    """(element number, value, size in characters) for each element of a top-level array."""
    window = _Window(chunks)
    if window.skip_whitespace() != "[":
        raise _syntax_error(window, 1, window.pos, "the document does not start with [")
    window.pos += 1
    element = 0
    if window.skip_whitespace() == "]":
        window.pos += 1
    else:
        while True:
            element += 1
            if window.skip_whitespace() == "":
                raise _syntax_error(window, element, window.pos, "the array is not closed")
            value, end = _decode_element(window, element)
            yield element, value, end - window.pos
            window.pos = end
            separator = window.skip_whitespace()
            if separator == ",":
                window.pos += 1
                continue
            if separator == "]":
                window.pos += 1
                break
            reason = "the array is not closed" if separator == "" else "expected , or ]"
            raise _syntax_error(window, element, window.pos, reason)
    if window.skip_whitespace() != "":
        raise _syntax_error(window, element + 1, window.pos, "extra data after the array")


def _decode_element(window: _Window, element: int) -> tuple[object, int]:
    while True:
        try:
            value, end = _DECODER.raw_decode(window.text, window.pos)
        except RecursionError:
            raise JsonArrayError(
                Issue(
                    element,
                    None,
                    codes.TOO_DEEPLY_NESTED,
                    f"Element {element} of the JSON array nests objects or arrays too deeply "
                    "to be read; a training example is a few levels deep.",
                )
            ) from None
        except json.JSONDecodeError as exc:
            cut_short = exc.msg.startswith("Unterminated string") or (
                exc.pos >= len(window.text) - _TRUNCATION_MARGIN
            )
            if cut_short and window.fill():
                continue
            raise _syntax_error(window, element, exc.pos, exc.msg) from None
        # A number at the very end of the window may continue in the next chunk.
        if end >= len(window.text) and not window.eof and window.fill():
            continue
        return value, end
