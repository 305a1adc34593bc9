"""CSV, TSV and spreadsheet uploads: conversion, line numbers, mapping, encodings."""

from __future__ import annotations

import csv
from pathlib import Path

import openpyxl
import pytest

from service.datasets.ingest import IngestOptions, ingest_file
from service.providers.registry import packaged_spec
from tests.unit.test_dataset_support import DATA, cookbook_count, read_jsonl

SYSTEM = "西村ひろゆきBot"


def test_seed_csv_becomes_29_chat_examples_with_the_cookbook_token_count(tmp_path: Path) -> None:
    dest = tmp_path / "out.jsonl"
    report = ingest_file(DATA / "hiroyuki.csv", dest, IngestOptions(system_prompt=SYSTEM))

    assert report.ok, report.errors
    assert report.format == "csv"
    assert report.kind == "chat"
    assert report.example_count == 29
    examples = read_jsonl(dest)
    assert len(examples) == 29
    with (DATA / "hiroyuki.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    for example, row in zip(examples, rows, strict=True):
        assert example["messages"] == [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": row["user"]},
            {"role": "assistant", "content": row["assistant"]},
        ]
    expected = sum(cookbook_count(example["messages"]) for example in examples)
    assert report.token_count == expected
    assert report.tokens.encoding == "o200k_base"
    assert report.warning_total == 0
    # Compact, UTF-8, not ASCII-escaped.
    first_line = dest.read_text(encoding="utf-8").splitlines()[0]
    assert first_line.startswith('{"messages":[{"role":"system","content":"西村ひろゆきBot"}')


def test_seed_csv_counted_with_the_gpt35_encoding(tmp_path: Path) -> None:
    report = ingest_file(
        DATA / "hiroyuki.csv",
        tmp_path / "out.jsonl",
        IngestOptions(system_prompt=SYSTEM, spec=packaged_spec("gpt-3.5-turbo")),
    )
    examples = read_jsonl(tmp_path / "out.jsonl")
    assert report.model == "gpt-3.5-turbo-0125"
    assert report.tokens.encoding == "cl100k_base"
    assert report.tokens.example_token_limit == 16385
    assert report.token_count == sum(cookbook_count(e["messages"], "cl100k_base") for e in examples)


def _messy_csv() -> bytes:
    rows = [
        "question,answer,notes",
        "What is 1+1?,2,plain",
        '"A question, with a comma","An answer\r\nspanning\r\nthree lines",multi',
        "Where is line 6?,Here,after the multi-line field",
        "Empty answer?,,oops",
        '"He said ""hi""","Quoted ""quotes""",quotes',
        ",,",
        "Last,Row,end",
    ]
    return b"\xef\xbb\xbf" + "\r\n".join(rows).encode("utf-8") + b"\r\n"


def test_messy_csv_line_numbers_mapping_and_empty_cells(tmp_path: Path) -> None:
    source = tmp_path / "messy.csv"
    source.write_bytes(_messy_csv())
    options = IngestOptions(user_column="question", assistant_column="answer", min_examples=1)
    report = ingest_file(source, tmp_path / "out.jsonl", options)

    assert report.format == "csv"
    # Record 3 starts on line 3 and spans lines 3-5, so the next record is line 6.
    assert [(i.line, i.path, i.code) for i in report.errors] == [(7, "answer", "missing_content")]
    assert report.example_count == 6  # the all-empty row is skipped
    examples = read_jsonl(tmp_path / "out.jsonl")
    assert examples[1]["messages"][0] == {"role": "user", "content": "A question, with a comma"}
    assert examples[1]["messages"][1]["content"] == "An answer\r\nspanning\r\nthree lines"
    assert examples[3]["messages"][0]["content"] == 'He said "hi"'
    # No system prompt was given, so each converted example warns once.
    assert report.warning_totals == {"missing_system_message": 5}


def test_line_after_a_multiline_field_is_reported_exactly(tmp_path: Path) -> None:
    source = tmp_path / "multi.csv"
    source.write_text(
        'user,assistant\n"one","two\nthree\nfour"\n"",missing user\nok,fine\n', encoding="utf-8"
    )
    report = ingest_file(source, tmp_path / "out.jsonl", IngestOptions(min_examples=1))
    assert [(i.line, i.path, i.code) for i in report.errors] == [(5, "user", "missing_content")]


def test_missing_column_names_the_column_and_the_header_line(tmp_path: Path) -> None:
    source = tmp_path / "bad-header.csv"
    source.write_text("prompt,reply\nhi,there\n", encoding="utf-8")
    report = ingest_file(source, tmp_path / "out.jsonl", IngestOptions(min_examples=1))
    assert [(i.line, i.path, i.code) for i in report.errors] == [
        (1, "user", "missing_column"),
        (1, "assistant", "missing_column"),
    ]
    assert '"prompt"' in report.errors[0].message


def test_tsv_is_detected_and_converted(tmp_path: Path) -> None:
    source = tmp_path / "data.tsv"
    lines = ["user\tassistant"] + [f"q{i}, with comma\ta{i}" for i in range(12)]
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    report = ingest_file(source, tmp_path / "out.jsonl", IngestOptions(system_prompt="S"))
    assert report.ok, report.errors
    assert report.format == "tsv"
    assert read_jsonl(tmp_path / "out.jsonl")[0]["messages"][1]["content"] == "q0, with comma"


def test_system_column_overrides_the_system_prompt(tmp_path: Path) -> None:
    source = tmp_path / "sys.csv"
    source.write_text("sys,user,assistant\nCustom,q,a\n,q2,a2\n", encoding="utf-8")
    options = IngestOptions(system_prompt="Default", system_column="sys", min_examples=1)
    ingest_file(source, tmp_path / "out.jsonl", options)
    first, second = read_jsonl(tmp_path / "out.jsonl")
    assert first["messages"][0] == {"role": "system", "content": "Custom"}
    assert second["messages"][0] == {"role": "system", "content": "Default"}


def test_shift_jis_file_gives_one_encoding_error(tmp_path: Path) -> None:
    source = tmp_path / "sjis.csv"
    source.write_bytes("user,assistant\nこんにちは,どうも\n".encode("shift_jis"))
    report = ingest_file(source, tmp_path / "out.jsonl", IngestOptions())
    assert [(i.line, i.code) for i in report.errors] == [(2, "encoding")]
    assert "UTF-8" in report.errors[0].message
    assert report.error_total == 1


def test_shift_jis_jsonl_gives_one_encoding_error(tmp_path: Path) -> None:
    source = tmp_path / "sjis.jsonl"
    good = '{"messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"}]}\n'
    source.write_bytes(
        good.encode() + good.replace("b", "ぶひ").encode("shift_jis") + good.encode()
    )
    report = ingest_file(source, tmp_path / "out.jsonl", IngestOptions())
    assert [(i.line, i.code) for i in report.errors] == [(2, "encoding")]


def test_unterminated_quote_is_a_table_error(tmp_path: Path) -> None:
    source = tmp_path / "open.csv"
    source.write_text('user,assistant\nq,"never closed\nmore\n', encoding="utf-8")
    report = ingest_file(source, tmp_path / "out.jsonl", IngestOptions(min_examples=1))
    assert [(i.line, i.code) for i in report.errors] == [(2, "invalid_table")]


def test_xlsx_first_sheet_is_read(tmp_path: Path) -> None:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.append(["Question", "Answer"])
    for number in range(11):
        sheet.append([f"What is {number} squared?", number * number])
    sheet.append([None, None])
    sheet.append(["No answer here", None])
    workbook.create_sheet("ignored").append(["user", "assistant"])
    source = tmp_path / "qa.xlsx"
    workbook.save(source)

    options = IngestOptions(user_column="question", assistant_column="answer", system_prompt="Math")
    report = ingest_file(source, tmp_path / "out.jsonl", options)
    assert report.format == "xlsx"
    # Row 13 is blank and skipped; row 14 lacks its answer.
    assert [(i.line, i.path, i.code) for i in report.errors] == [(14, "answer", "missing_content")]
    examples = read_jsonl(tmp_path / "out.jsonl")
    assert examples[3]["messages"][2] == {"role": "assistant", "content": "9"}
    assert report.source_sha256 is not None


def test_corrupt_xlsx_is_reported_not_raised(tmp_path: Path) -> None:
    source = tmp_path / "broken.xlsx"
    source.write_bytes(b"PK\x03\x04 definitely not a workbook")
    report = ingest_file(source, tmp_path / "out.jsonl", IngestOptions())
    assert report.errors[0].code == "invalid_table"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("a,b\n1,2\n", "csv"), ("a\tb\n1\t2\n", "tsv"), ('{"a":1}\n', "jsonl"), (" [1]", "json")],
)
def test_format_detection(text: str, expected: str) -> None:
    from service.domain.datasets.formats import detect_format

    assert detect_format(text.encode()) == expected
