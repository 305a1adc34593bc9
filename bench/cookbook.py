"""The two ingest baselines, written from their descriptions rather than from the service.

`cookbook` follows OpenAI's "Data preparation and analysis for chat model
fine-tuning" notebook as people run it: one thread, every line `json.loads`-ed
into a list, the notebook's format checks, then `num_tokens_from_messages`
(3 per message, the encoded length of every value, 1 per name, 3 per
conversation) and `num_assistant_tokens_from_messages` per example. Each
phase is timed on its own, so the report can also quote the cheaper
"load and count only" variant.

`tokenize_floor` is what no ingest can beat on this machine: the same message
values, already in memory, through tiktoken's `encode_ordinary_batch` with one
thread per core. Only the encoding is timed.
"""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tiktoken

# Batches keep the token lists encode_ordinary_batch returns from piling up
# (100 MB of text is tens of millions of Python ints).
FLOOR_BATCH_TEXTS = 4096


@dataclass
class CookbookResult:
    examples: int = 0
    token_count: int = 0
    assistant_tokens: int = 0
    format_errors: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def total_seconds(self) -> float:
        return sum(self.seconds.values())

    @property
    def load_and_count_seconds(self) -> float:
        return self.seconds["load"] + self.seconds["count"]


def _format_errors(dataset: list[Any]) -> dict[str, int]:
    errors: dict[str, int] = defaultdict(int)
    for ex in dataset:
        if not isinstance(ex, dict):
            errors["data_type"] += 1
            continue
        messages = ex.get("messages", None)
        if not messages:
            errors["missing_messages_list"] += 1
            continue
        for message in messages:
            if "role" not in message or "content" not in message:
                errors["message_missing_key"] += 1
            if any(
                k not in ("role", "content", "name", "function_call", "weight") for k in message
            ):
                errors["message_unrecognized_key"] += 1
            if message.get("role", None) not in ("system", "user", "assistant", "function"):
                errors["unrecognized_role"] += 1
            content = message.get("content", None)
            function_call = message.get("function_call", None)
            if (not content and not function_call) or not isinstance(content, str):
                errors["missing_content"] += 1
        if not any(message.get("role", None) == "assistant" for message in messages):
            errors["example_missing_assistant_message"] += 1
    return dict(errors)


def cookbook(path: Path, encoding_name: str) -> CookbookResult:
    result = CookbookResult()
    encoding = tiktoken.get_encoding(encoding_name)

    def num_tokens_from_messages(messages: list[dict[str, Any]]) -> int:
        num_tokens = 0
        for message in messages:
            num_tokens += 3
            for key, value in message.items():
                num_tokens += len(encoding.encode(value))
                if key == "name":
                    num_tokens += 1
        return num_tokens + 3

    def num_assistant_tokens_from_messages(messages: list[dict[str, Any]]) -> int:
        return sum(
            len(encoding.encode(message["content"]))
            for message in messages
            if message["role"] == "assistant"
        )

    started = time.perf_counter()
    with path.open(encoding="utf-8") as handle:
        dataset = [json.loads(line) for line in handle]
    result.seconds["load"] = time.perf_counter() - started

    started = time.perf_counter()
    result.format_errors = _format_errors(dataset)
    result.seconds["checks"] = time.perf_counter() - started

    started = time.perf_counter()
    result.token_count = sum(num_tokens_from_messages(ex["messages"]) for ex in dataset)
    result.seconds["count"] = time.perf_counter() - started

    started = time.perf_counter()
    result.assistant_tokens = sum(
        num_assistant_tokens_from_messages(ex["messages"]) for ex in dataset
    )
    result.seconds["assistant"] = time.perf_counter() - started
    result.examples = len(dataset)
    return result


def message_texts(path: Path) -> list[str]:
    """Every value the counting rule encodes (roles and contents), in file order."""
    texts: list[str] = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            for message in json.loads(line)["messages"]:
                texts.extend(message.values())
    return texts


def _slices(texts: list[str], parts: int) -> list[list[str]]:
    size = -(-len(texts) // parts)
    return [texts[start : start + size] for start in range(0, len(texts), size)]


def tokenize_floor(
    texts: list[str], encoding_name: str, *, with_batch: bool = True
) -> dict[str, tuple[float, int]]:
    """Seconds and tokens for encoding `texts` with one thread per core, three ways.

    - `batch`: tiktoken's own encode_ordinary_batch(num_threads=cores), as the
      issue names it. It submits one task per text, so for short texts the
      executor costs more than the encoding.
    - `slices`: one contiguous slice of texts per core, encode_ordinary in each.
    - `buffer`: the same slices, counting through tiktoken's internal
      encode_to_tiktoken_buffer (no Python list of token ids). Only when this
      tiktoken has it.

    The floor is the fastest of them. `batch` is by far the slowest (several
    times the others), so repeated rounds may leave it out.
    """
    encoding = tiktoken.get_encoding(encoding_name)
    threads = os.cpu_count() or 1
    results: dict[str, tuple[float, int]] = {}

    if with_batch:
        started = time.perf_counter()
        tokens = 0
        for start in range(0, len(texts), FLOOR_BATCH_TEXTS):
            batch = encoding.encode_ordinary_batch(
                texts[start : start + FLOOR_BATCH_TEXTS], num_threads=threads
            )
            tokens += sum(len(ids) for ids in batch)
        results["batch"] = (time.perf_counter() - started, tokens)

    def count_lists(part: list[str]) -> int:
        return sum(len(encoding.encode_ordinary(text)) for text in part)

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        tokens = sum(pool.map(count_lists, _slices(texts, threads)))
    results["slices"] = (time.perf_counter() - started, tokens)

    to_buffer = getattr(getattr(encoding, "_core_bpe", None), "encode_to_tiktoken_buffer", None)
    if to_buffer is not None:
        allowed: set[str] = set()

        def count_buffers(part: list[str]) -> int:
            return sum(memoryview(to_buffer(text, allowed)).nbytes // 4 for text in part)

        started = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            tokens = sum(pool.map(count_buffers, _slices(texts, threads)))
        results["buffer"] = (time.perf_counter() - started, tokens)
    return results
