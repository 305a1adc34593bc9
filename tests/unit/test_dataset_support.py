"""Helpers shared by the dataset tests (an independent cookbook count, file makers),
and a check of the independent count itself."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import tiktoken

# The seed posts' files, kept where the README's walkthrough uses them.
DATA = Path(__file__).resolve().parents[2] / "docs" / "examples"


def cookbook_count(messages: list[dict[str, Any]], encoding_name: str = "o200k_base") -> int:
    """The OpenAI cookbook's num_tokens_from_messages, written out plainly."""
    encoding = tiktoken.get_encoding(encoding_name)
    total = 0
    for message in messages:
        total += 3
        for key, value in message.items():
            total += len(encoding.encode(value))
            if key == "name":
                total += 1
    return total + 3


def chat(user: str, assistant: str, system: str | None = "You are terse.") -> dict[str, Any]:
    messages = [{"role": "system", "content": system}] if system else []
    messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return {"messages": messages}


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text(
        "".join(
            (row if isinstance(row, str) else json.dumps(row, ensure_ascii=False)) + "\n"
            for row in rows
        ),
        encoding="utf-8",
    )
    return path


def valid_rows(count: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        chat(f"Question number {i}?", f"Answer number {i}.") for i in range(start, start + count)
    ]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_independent_cookbook_count_matches_a_hand_count() -> None:
    # "user" and "hello" are one token each in o200k_base: 3 + 1 + 1, plus 3.
    encoding = tiktoken.get_encoding("o200k_base")
    assert len(encoding.encode("user")) == len(encoding.encode("hello")) == 1
    assert cookbook_count([{"role": "user", "content": "hello"}]) == 8
    assert cookbook_count([{"role": "user", "content": "hello", "name": "bob"}]) == 8 + 1 + 1
