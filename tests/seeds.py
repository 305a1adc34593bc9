"""The seed posts' data, from docs/examples (copied there from ../shared/seeds)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import tiktoken

REPO = Path(__file__).resolve().parents[1]
SEEDS = REPO.parent / "shared" / "seeds"
LOCAL = REPO / "docs" / "examples"
SYSTEM_PROMPT = "西村ひろゆきBot"


def hiroyuki_csv() -> str:
    """The 29-row `user,assistant` CSV from seed 003."""
    local = LOCAL / "hiroyuki.csv"
    if local.exists():
        return local.read_text(encoding="utf-8")
    text = (SEEDS / "003_a94b50bf1b6c164a.txt").read_text(encoding="utf-8")
    start = text.index("user,assistant")
    return text[start : text.index("```", start)]


def three_examples_jsonl() -> str:
    """The three-example file from seed 002 that OpenAI refused."""
    text = (SEEDS / "002_8cd82ab286f16200.txt").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line.startswith('{"messages"')]
    assert len(lines) == 3
    return "\n".join(lines) + "\n"


def cookbook_tokens(examples: list[dict], encoding_name: str = "o200k_base") -> int:
    """The cookbook's count, written out independently of the service's code."""
    encoding = tiktoken.get_encoding(encoding_name)
    total = 0
    for example in examples:
        tokens = 3
        for message in example["messages"]:
            tokens += 3
            for key, value in message.items():
                tokens += len(encoding.encode(value))
                if key == "name":
                    tokens += 1
        total += tokens
    return total


def jsonl(examples: list[dict]) -> bytes:
    return "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in examples).encode()


def chat_examples(count: int, *, prefix: str = "q") -> list[dict]:
    return [
        {
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": f"{prefix} question {i}?"},
                {"role": "assistant", "content": f"Answer {i}."},
            ]
        }
        for i in range(count)
    ]


async def big_chat_jsonl(count: int) -> bytes:
    """`jsonl(chat_examples(count))` built in a thread. A test whose event loop also
    runs the worker must not block it for seconds: the worker's Redis reads in
    flight would time out meanwhile, and arq's loop ends on such an error."""
    return await asyncio.to_thread(lambda: jsonl(chat_examples(count)))
