"""The datasets of the two seed posts in shared/seeds, and small made-up ones."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

SEEDS = Path(__file__).resolve().parents[3] / "shared" / "seeds"
HIROYUKI_SYSTEM_PROMPT = "西村ひろゆきBot"


def hiroyuki_rows() -> list[dict[str, str]]:
    """The 29 question/answer rows of the CSV in the 003 seed post."""
    text = next(SEEDS.glob("003_*.txt")).read_text(encoding="utf-8")
    block = text.split("```csv:test_data:csv\n", 1)[1].split("```", 1)[0]
    return list(csv.DictReader(io.StringIO(block)))


def csv_to_chat_jsonl(rows: list[dict[str, str]], system_prompt: str) -> bytes:
    """The seed post's own conversion: one chat example per row, system prompt first."""
    lines = [
        json.dumps(
            {
                "messages": [
                    {"role": "system", "content": system_prompt},
                    {"role": "user", "content": row["user"]},
                    {"role": "assistant", "content": row["assistant"]},
                ]
            },
            ensure_ascii=False,
        )
        for row in rows
    ]
    return ("\n".join(lines) + "\n").encode("utf-8")


def buta_jsonl() -> bytes:
    """The three-example file from the 002 seed post, which OpenAI rejected."""
    text = next(SEEDS.glob("002_*.txt")).read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line.startswith('{"messages"')]
    return ("\n".join(lines) + "\n").encode("utf-8")


def chat_examples(count: int, *, prefix: str = "question") -> bytes:
    lines = [
        json.dumps(
            {
                "messages": [
                    {"role": "system", "content": "You are terse."},
                    {"role": "user", "content": f"{prefix} number {i}?"},
                    {"role": "assistant", "content": f"answer number {i}."},
                ]
            }
        )
        for i in range(count)
    ]
    return ("\n".join(lines) + "\n").encode()
