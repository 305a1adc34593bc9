"""Chunking, the process pool, the train/validation split and output hygiene."""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from service.datasets.ingest import IngestOptions, IngestReport, ingest_file, split_dataset
from service.domain.catalog import Counting
from service.domain.tokens import preload_encodings
from service.providers.registry import packaged_spec
from tests.unit.test_dataset_support import chat, cookbook_count, read_jsonl, write_jsonl


def many_rows(count: int) -> list[Any]:
    rows: list[Any] = [
        chat(f"質問 {i}: how do I do thing {i}?", f"Answer {i}: " + "details " * (i % 40))
        for i in range(count)
    ]
    rows[5] = "not json"
    rows[777] = {"messages": [{"role": "user", "content": "no answer"}]}
    rows[1500] = rows[20]
    rows[2100] = chat("no system", "here", system=None)
    return rows


def comparable(report: IngestReport) -> dict[str, Any]:
    return report.to_dict()


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("big") / "big.jsonl", many_rows(2500))


def test_chunked_and_pooled_runs_match_the_inline_run(big_file: Path, tmp_path: Path) -> None:
    inline = ingest_file(big_file, tmp_path / "inline.jsonl", IngestOptions())
    small_chunks = IngestOptions(chunk_bytes=4096, parallel_threshold_bytes=0)
    chunked = ingest_file(big_file, tmp_path / "chunked.jsonl", small_chunks)
    with ProcessPoolExecutor(max_workers=2, initializer=preload_encodings) as pool:
        pooled = ingest_file(big_file, tmp_path / "pooled.jsonl", small_chunks, executor=pool)

    assert comparable(inline) == comparable(chunked) == comparable(pooled)
    assert (tmp_path / "inline.jsonl").read_bytes() == (tmp_path / "pooled.jsonl").read_bytes()
    assert [(i.line, i.code) for i in pooled.errors] == [
        (6, "invalid_json"),
        (778, "example_missing_assistant_message"),
    ]
    assert pooled.warning_totals == {"duplicate_example": 1, "missing_system_message": 1}
    duplicate = next(w for w in pooled.warnings if w.code == "duplicate_example")
    assert duplicate.line == 1501
    assert "line 21" in duplicate.message
    rows = [
        json.loads(line)
        for line in big_file.read_text(encoding="utf-8").splitlines()
        if line.startswith("{")
    ]
    valid = [row for row in rows if any(m["role"] == "assistant" for m in row["messages"])]
    assert pooled.token_count == sum(cookbook_count(row["messages"]) for row in valid)
    assert pooled.source_sha256 == hashlib.sha256(big_file.read_bytes()).hexdigest()
    assert (
        pooled.normalized_sha256
        == hashlib.sha256((tmp_path / "pooled.jsonl").read_bytes()).hexdigest()
    )
    # The pool read its chunks through a link beside the output; it is gone.
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "chunked.jsonl",
        "inline.jsonl",
        "pooled.jsonl",
    ]


def test_a_pool_reads_the_chunks_it_is_sent_where_no_link_can_be_made(
    big_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*_: object) -> None:
        raise OSError(18, "Invalid cross-device link")

    options = IngestOptions(chunk_bytes=4096, parallel_threshold_bytes=0)
    inline = ingest_file(big_file, tmp_path / "inline.jsonl", options)
    monkeypatch.setattr("os.link", refuse)
    with ProcessPoolExecutor(max_workers=2, initializer=preload_encodings) as pool:
        pooled = ingest_file(big_file, tmp_path / "pooled.jsonl", options, executor=pool)

    assert comparable(pooled) == comparable(inline)
    assert (tmp_path / "inline.jsonl").read_bytes() == (tmp_path / "pooled.jsonl").read_bytes()


def test_a_pool_still_reads_a_source_deleted_while_it_works(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "doomed.jsonl", many_rows(2500))
    expected = ingest_file(source, tmp_path / "inline.jsonl", IngestOptions())
    deleted = []

    def delete_source(done: int, total: int, examples: int) -> None:
        if not deleted:
            source.unlink()
            deleted.append(done)

    options = IngestOptions(chunk_bytes=4096, parallel_threshold_bytes=0, progress=delete_source)
    with ProcessPoolExecutor(max_workers=2, initializer=preload_encodings) as pool:
        report = ingest_file(source, tmp_path / "pooled.jsonl", options, executor=pool)

    assert deleted
    assert deleted[0] < expected.source_bytes  # deleted before the last chunk was read
    assert comparable(report) == comparable(expected)


def test_pooled_table_and_array_inputs_match_inline(tmp_path: Path) -> None:
    csv_source = tmp_path / "rows.csv"
    csv_source.write_text(
        "user,assistant\n" + "".join(f'"q{i}","a\n{i}"\n' for i in range(600)) + ",empty\n",
        encoding="utf-8",
    )
    array_source = tmp_path / "rows.json"
    array_source.write_text(json.dumps([chat(f"q{i}", f"a{i}") for i in range(600)]))
    options = IngestOptions(chunk_bytes=2048, parallel_threshold_bytes=0, system_prompt="S")
    with ProcessPoolExecutor(max_workers=2) as pool:
        for source in (csv_source, array_source):
            inline = ingest_file(source, tmp_path / "a.jsonl", options)
            pooled = ingest_file(source, tmp_path / "b.jsonl", options, executor=pool)
            assert comparable(inline) == comparable(pooled)
            assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
            assert pooled.valid_example_count == 600


def test_csv_row_lines_survive_chunking(tmp_path: Path) -> None:
    source = tmp_path / "rows.csv"
    source.write_text(
        "user,assistant\n" + "".join(f'"q{i}","a\n{i}"\n' for i in range(600)) + ",empty\n",
        encoding="utf-8",
    )
    report = ingest_file(source, tmp_path / "out.jsonl", IngestOptions(chunk_bytes=2048))
    assert [(i.line, i.path, i.code) for i in report.errors] == [(1202, "user", "missing_content")]


def test_split_is_deterministic_and_keeps_every_example(tmp_path: Path) -> None:
    rows = [chat(f"q{i}", f"a{i}") for i in range(40)]
    rows.append(rows[3])
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    normalized = tmp_path / "norm.jsonl"
    assert ingest_file(source, normalized, IngestOptions()).ok

    def run(seed: int, tag: str) -> tuple[Any, bytes, bytes]:
        train, valid = tmp_path / f"train-{tag}.jsonl", tmp_path / f"valid-{tag}.jsonl"
        report = split_dataset(normalized, train, valid, validation_fraction=0.2, seed=seed)
        return report, train.read_bytes(), valid.read_bytes()

    first, second, other = run(7, "a"), run(7, "b"), run(8, "c")
    assert first[1:] == second[1:]
    assert first[1:] != other[1:]
    report = first[0]
    assert report.validation.example_count == 8  # round(41 x 0.2)
    assert report.train.example_count + report.validation.example_count == 41
    train_rows, valid_rows = (
        read_jsonl(tmp_path / "train-a.jsonl"),
        read_jsonl(tmp_path / "valid-a.jsonl"),
    )
    # Exact duplicates land on the same side.
    duplicate = rows[3]
    assert (duplicate in train_rows) != (duplicate in valid_rows)
    assert report.train.token_count == sum(cookbook_count(r["messages"]) for r in train_rows)
    assert (
        report.validation.sha256
        == hashlib.sha256((tmp_path / "valid-a.jsonl").read_bytes()).hexdigest()
    )
    with pytest.raises(ValueError, match="validation_fraction"):
        split_dataset(normalized, tmp_path / "t", tmp_path / "v", validation_fraction=1.0, seed=1)


def test_unexpected_failure_removes_dest(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [chat("q", "a")] * 10)
    dest = tmp_path / "out.jsonl"
    broken = replace(packaged_spec("gpt-4o-mini"), counting=Counting(tokenizer="no_such_encoding"))
    with pytest.raises(ValueError, match="Unknown encoding"):
        ingest_file(source, dest, IngestOptions(spec=broken))
    assert not dest.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]
