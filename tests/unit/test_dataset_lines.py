"""How a JSONL line is read: the fast reader for plain chat lines agrees with the
reference decoder, and every other line is judged as before.

The normalized file is what the provider receives, so every line of it must be
exactly the compact JSON that Python's own encoder writes for the parsed line.
"""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service.datasets.ingest import IngestOptions, ingest_file
from tests.unit.test_dataset_support import chat, valid_rows, write_jsonl

SURROGATES = range(0xD800, 0xE000)


def reference_line(line: str) -> bytes:
    value = json.loads(line)
    return (json.dumps(value, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


def code_point_rows(per_row: int) -> Iterator[dict[str, Any]]:
    """Plain chat examples whose questions hold every code point but the surrogates."""
    points = [p for p in range(sys.maxunicode + 1) if p not in SURROGATES]
    for start in range(0, len(points), per_row):
        text = "".join(map(chr, points[start : start + per_row]))
        # A letter first, so no question is blank (blank content is another path).
        yield chat("x" + text, f"answer {start}")


@pytest.mark.parametrize("escaped", [False, True], ids=["raw-utf8", "ascii-escapes"])
def test_every_code_point_is_written_back_as_the_reference_encoder_writes_it(
    tmp_path: Path, escaped: bool
) -> None:
    source = tmp_path / "points.jsonl"
    lines = [
        json.dumps(row, ensure_ascii=escaped, separators=(", ", ": "))
        for row in code_point_rows(4096)
    ]
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")

    report = ingest_file(source, tmp_path / "out.jsonl", IngestOptions(chunk_bytes=256 * 1024))

    assert report.errors == []
    assert report.valid_example_count == len(lines) > 250
    written = (tmp_path / "out.jsonl").read_bytes().splitlines(keepends=True)
    assert written == [reference_line(line) for line in lines]


def test_lines_the_fast_reader_refuses_are_judged_by_the_reference(tmp_path: Path) -> None:
    good = valid_rows(10)
    plain = json.dumps(chat("q", "a"))
    rows: list[Any] = [
        *good,  # 1-10
        # A lone surrogate escape in the plain shape: not Unicode.
        '{"messages": [{"role": "user", "content": "bad \\ud800 text"}, '
        '{"role": "assistant", "content": "a"}]}',  # 11
        # A weight too big for 64 bits is still read exactly, and refused as a weight.
        '{"messages": [{"role": "user", "content": "q"}, '
        '{"role": "assistant", "content": "a", "weight": 100000000000000000000}]}',  # 12
        plain + "\r",  # 13: a CRLF line is fine
        plain + "\u3000",  # 14: an ideographic space after the object is not JSON
        "\u3000\u3000",  # 15: but a line of it alone is blank
        "\ufeff" + plain,  # 16: a byte order mark inside the file is not JSON
        '{"messages": [{"role": "user", "content": NaN}, '
        '{"role": "assistant", "content": "a"}]}',  # 17
        chat("last", "one"),  # 18
    ]
    source = write_jsonl(tmp_path / "mixed.jsonl", rows)

    report = ingest_file(source, tmp_path / "out.jsonl", IngestOptions())

    assert [(i.line, i.path, i.code) for i in report.errors] == [
        (11, None, "encoding"),
        (12, "messages[1].weight", "invalid_weight"),
        (14, None, "invalid_json"),
        (16, None, "invalid_json"),
        (17, None, "invalid_json"),
    ]
    assert "unpaired surrogate escape (\\ud800)" in report.errors[0].message
    assert report.errors[2].message.startswith("Line 14 is not valid JSON: Extra data")
    # Lines 11, 12 and 18 and the ten good ones and 13 are examples; 14, 16 and 17
    # do not parse and line 15 is blank.
    assert report.example_count == 14
    assert report.valid_example_count == 12


# Valid examples of every shape the service reads; the test below breaks them.
TEMPLATES: list[dict[str, Any]] = [
    chat("q", "a"),
    {
        "messages": [
            {"role": "system", "content": "s"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "hi"},
                    {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
                ],
                "name": "bob",
            },
            {"role": "assistant", "content": "a", "weight": 1},
        ]
    },
    {
        "messages": [
            {"role": "user", "content": "q"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "r"},
            {"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]},
        ],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
        "parallel_tool_calls": False,
    },
    {
        "messages": [
            {"role": "user", "content": "q"},
            {"role": "assistant", "function_call": {"name": "f", "arguments": "{}"}},
            {"role": "function", "name": "f", "content": "r"},
            {"role": "assistant", "content": "a"},
        ],
        "functions": [{"name": "f", "parameters": {}}],
    },
    {
        "input": {"messages": [{"role": "user", "content": "q"}]},
        "preferred_output": [{"role": "assistant", "content": "a"}],
        "non_preferred_output": [{"role": "assistant", "content": "b"}],
    },
    {"prompt": "p", "completion": "c"},
    {"user": "q", "assistant": "a"},
]
ODD_VALUES: list[Any] = [["x"], {"a": 1}, {"type": ["x"]}, 7, None, True, 1.5, "", "zz"]


def _paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*path, index))


def _replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    copied = copy.deepcopy(value)
    target = copied
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = new
    return copied


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda t: "-".join(t)[:40])
def test_any_value_anywhere_gets_an_answer_naming_its_line(
    tmp_path: Path, template: dict[str, Any]
) -> None:
    # Every place in the template, given each odd value in turn: each line is
    # either taken or refused with an issue on that line; nothing raises.
    rows = [_replaced(template, path, odd) for path in _paths(template) for odd in ODD_VALUES]
    source = tmp_path / "odd.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")

    options = IngestOptions(format="jsonl", max_errors=10 * len(rows))
    report = ingest_file(source, tmp_path / "out.jsonl", options)

    refused = {issue.line for issue in report.errors}
    assert None not in refused
    assert report.example_count == len(rows)
    assert report.valid_example_count + len(refused) == len(rows)
    assert 0 < len(refused) < len(rows)
