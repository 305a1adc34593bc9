"""Token counting by the cookbook's rule, and the table of fine-tunable models.

The rule (OpenAI cookbook, "Data preparation and analysis for chat model
fine-tuning"): every message costs 3 tokens plus the encoded length of each of
its values, a `name` costs 1 more, and the conversation as a whole costs 3.
The cookbook only ever sees string values; this module says how the other
shapes count, so that one number means the same thing everywhere:

- `content` as a list of parts: the text of every `text` part and of every
  `refusal` part; image parts add nothing (their cost depends on resolution
  and is not part of this rule).
- `tool_calls` and `function_call`: the encoded compact JSON of the value.
- `weight`: nothing (it steers training, it is not text the model reads).
- `content: null`: nothing.
- The example's `tools` / `functions`, when present: the encoded compact JSON
  of the list, once per example. The cookbook ignores them; the provider does
  not, and leaving them out would understate long tool schemas.

Encoding is by target model: `o200k_base` for gpt-4o*, gpt-4.1* and o-series
models, `cl100k_base` for gpt-3.5-turbo and gpt-4. Texts are encoded with
`encode_ordinary`, so text that happens to spell a special token
(`<|endoftext|>`) is counted as text instead of raising as `encode` would.

Counting uses `bpe-openai` (a Rust BPE that gives tiktoken's exact counts for
these encodings, 2-4x faster per thread) when it is installed, and tiktoken
otherwise; tiktoken stays the reference the tests compare it with.
"""

from __future__ import annotations

import importlib
import json
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import Any

import tiktoken

from service.domain.catalog import Counting

TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
TOKENS_PER_CONVERSATION = 3

KNOWN_ENCODINGS = ("o200k_base", "cl100k_base")
# A tokenizer name with this prefix is a Hugging Face `tokenizer.json` on disk.
HF_PREFIX = "hf:"

# Texts shorter than this are not worth a thread hand-off: the per-item
# overhead of an executor is larger than encoding them.
_MIN_TEXTS_FOR_THREADS = 2048


def get_encoding(name: str) -> tiktoken.Encoding:
    """tiktoken caches encodings per process, so this is cheap after the first call.

    Offline machines need `TIKTOKEN_CACHE_DIR` pointing at the rank files.
    """
    encoding: tiktoken.Encoding = tiktoken.get_encoding(name)
    return encoding


def preload_encodings() -> None:
    """Load every known encoding and build its counter (bpe-openai's takes a few
    seconds); the `initializer=` of the ingest process pool, so no upload waits
    for it."""
    for name in KNOWN_ENCODINGS:
        get_encoding(name)
        token_counter(name)


# Built once: json.dumps with options builds a new encoder on every call.
# Values come from json.loads, so they cannot be circular.
_COMPACT_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False)


def compact_json(value: object) -> str:
    """The serialization of output lines and of the JSON values that are counted.

    Plain chat lines are written by orjson instead (see
    service.domain.datasets.chunks), which gives the same bytes for them.
    """
    return _COMPACT_ENCODER.encode(value)


def content_texts(content: object) -> Iterator[str]:
    """The texts a message's content contributes: the string, or its text/refusal parts."""
    if isinstance(content, str):
        yield content
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, dict):
                kind = part.get("type")
                if kind == "text" and isinstance(part.get("text"), str):
                    yield part["text"]
                elif kind == "refusal" and isinstance(part.get("refusal"), str):
                    yield part["refusal"]


def example_texts(
    messages: Sequence[Mapping[str, Any]],
    extras: Sequence[object] = (),
    counting: Counting | None = None,
) -> tuple[list[str], list[bool], int]:
    """The texts to encode for one conversation, which of them are trained on, and the
    conversation's fixed overhead in tokens.

    A text is "trained on" when it is what an assistant message with weight 1
    (or no weight) writes: its content and its tool or function calls. The
    cookbook reports these as the assistant tokens. `extras` are example-level
    JSON values (tools, functions), counted once each.
    """
    per_message, per_name, per_conversation = (
        (counting.per_message, counting.per_name, counting.per_conversation)
        if counting is not None
        else (TOKENS_PER_MESSAGE, TOKENS_PER_NAME, TOKENS_PER_CONVERSATION)
    )
    texts: list[str] = []
    trained: list[bool] = []
    overhead = per_conversation
    for message in messages:
        overhead += per_message
        learns = message.get("role") == "assistant" and message.get("weight", 1) != 0
        for key, value in message.items():
            if key == "weight" or value is None:
                continue
            if key == "name":
                overhead += per_name
            if key == "content":
                before = len(texts)
                texts.extend(content_texts(value))
                trained.extend([learns] * (len(texts) - before))
                continue
            texts.append(value if isinstance(value, str) else compact_json(value))
            trained.append(learns and key in ("tool_calls", "function_call"))
    for extra in extras:
        if extra is not None:
            texts.append(compact_json(extra))
            trained.append(False)
    return texts, trained, overhead


def count_message_tokens(
    messages: Sequence[Mapping[str, Any]],
    encoding: tiktoken.Encoding,
    extras: Sequence[object] = (),
) -> int:
    """The cookbook count of one conversation (one example)."""
    texts, _, overhead = example_texts(messages, extras)
    return overhead + sum(len(encoding.encode_ordinary(text)) for text in texts)


@cache
def token_counter(tokenizer: str) -> Callable[[str], int]:
    """A function giving the number of tokens of a text without special tokens.

    `tokenizer` is a tiktoken encoding name, or `hf:<path to tokenizer.json>`
    for an open-weight model (read with the `tokenizers` library; no torch).
    A tiktoken encoding is counted by bpe-openai when it is installed (tests
    compare it with tiktoken on a corpus of edge cases), else by tiktoken.
    """
    if tokenizer.startswith(HF_PREFIX):
        return _hf_counter(tokenizer.removeprefix(HF_PREFIX))
    fast = fast_counter(tokenizer)
    reference = tiktoken_counter(tokenizer)
    if fast is None:
        return reference

    def count_fast(text: str) -> int:
        try:
            return fast(text)
        except UnicodeEncodeError:
            # Lone surrogates: tiktoken repairs them the way the provider counts.
            return reference(text)

    return count_fast


def fast_counter(encoding_name: str) -> Callable[[str], int] | None:
    """bpe-openai's counter for a tiktoken encoding, or None when it is not installed or
    does not know the encoding (the caller then counts with tiktoken)."""
    # bpe-openai's package reads its rank files with a deprecated importlib API.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            bindings = importlib.import_module("bpe_openai._bindings")
        except ImportError:
            return None
        if encoding_name not in bindings.supported_encodings():
            return None
        counter: Callable[[str], int] = bindings.tokenizer_for_encoding(encoding_name).count
    return counter


@cache
def tiktoken_counter(tokenizer: str) -> Callable[[str], int]:
    """tiktoken's count of a text without special tokens: the reference.

    len(encode_ordinary(text)) turns every token into a Python int in a new
    list and costs about as much as the encoding itself for long texts; the
    buffer that `encode_to_numpy` uses internally avoids that. When this
    tiktoken version lacks it, the public method is used. Tests check that
    both give the same counts.
    """
    encoding = get_encoding(tokenizer)
    core = getattr(encoding, "_core_bpe", None)
    to_buffer = getattr(core, "encode_to_tiktoken_buffer", None)
    encode = encoding.encode_ordinary
    if to_buffer is None:
        return lambda text: len(encode(text))
    no_special_tokens: set[str] = set()

    def count(text: str) -> int:
        try:
            return memoryview(to_buffer(text, no_special_tokens)).nbytes // 4
        except UnicodeEncodeError:
            # Lone surrogates: encode_ordinary knows how to repair them.
            return len(encode(text))

    return count


def _hf_counter(path: str) -> Callable[[str], int]:
    from tokenizers import Tokenizer  # only open-weight models need it

    loaded = Tokenizer.from_file(path)

    def count(text: str) -> int:
        return len(loaded.encode(text, add_special_tokens=False).ids)

    return count


def encoded_lengths(texts: Sequence[str], tokenizer: str, threads: int = 1) -> list[int]:
    """Token lengths of many texts; with threads > 1 the texts are split into slices.

    tiktoken releases the GIL while it encodes, so threads help inside one
    process. Each thread gets one contiguous slice instead of one task per
    text: per-task executor overhead would cost more than encoding a short text.
    """
    count = token_counter(tokenizer)
    if threads <= 1 or len(texts) < _MIN_TEXTS_FOR_THREADS:
        return [count(text) for text in texts]
    size = -(-len(texts) // threads)
    slices = [texts[start : start + size] for start in range(0, len(texts), size)]

    def lengths(part: Sequence[str]) -> list[int]:
        return [count(text) for text in part]

    with ThreadPoolExecutor(max_workers=threads) as pool:
        result: list[int] = []
        for part_lengths in pool.map(lengths, slices):
            result.extend(part_lengths)
    return result
