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
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import tiktoken

TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
TOKENS_PER_CONVERSATION = 3

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
DEFAULT_MODEL_TABLE_PATH = DATA_DIR / "models.json"
KNOWN_ENCODINGS = ("o200k_base", "cl100k_base")

# Texts shorter than this are not worth a thread hand-off: the per-item
# overhead of an executor is larger than encoding them.
_MIN_TEXTS_FOR_THREADS = 2048


class UnknownModelError(ValueError):
    """The target model is not in the model table, so its tokenizer is unknown."""

    def __init__(self, model: str) -> None:
        super().__init__(
            f"Unknown model {model!r}: its tokenizer and example token limit are not known. "
            "Use a fine-tunable snapshot such as gpt-4o-mini-2024-07-18."
        )
        self.model = model


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """What counting and pricing need to know about one target model."""

    requested: str
    base_model: str
    encoding: str
    example_token_limit: int
    limit_confirmed: bool


@dataclass(frozen=True, slots=True)
class _Family:
    prefix: str
    encoding: str
    example_token_limit: int
    limit_confirmed: bool


@dataclass(frozen=True)
class ModelTable:
    """Snapshots, their aliases and prefix families, loaded from `models.json`."""

    snapshots: Mapping[str, ModelSpec]
    aliases: Mapping[str, str]
    families: tuple[_Family, ...]

    def resolve(self, model: str) -> ModelSpec:
        """The spec for a snapshot, alias, family member or tuned model (`ft:` or Azure)."""
        base = base_model_of(model)
        snapshot = self.aliases.get(base, base)
        spec = self.snapshots.get(snapshot)
        if spec is not None:
            return ModelSpec(
                requested=model,
                base_model=snapshot,
                encoding=spec.encoding,
                example_token_limit=spec.example_token_limit,
                limit_confirmed=spec.limit_confirmed,
            )
        # Longest matching prefix wins, so "gpt-4o" beats "gpt-4-" style families.
        for family in sorted(self.families, key=lambda f: len(f.prefix), reverse=True):
            if snapshot.startswith(family.prefix):
                return ModelSpec(
                    requested=model,
                    base_model=snapshot,
                    encoding=family.encoding,
                    example_token_limit=family.example_token_limit,
                    limit_confirmed=family.limit_confirmed,
                )
        raise UnknownModelError(model)


_AZURE_TUNED = re.compile(r"^(?P<base>.+?)\.ft-[0-9a-f]+$")


def base_model_of(model: str) -> str:
    """The base model a tuned model was trained from; other names pass through.

    OpenAI: `ft:<base>:<org>:<suffix>:<id>` (checkpoints add `:ckpt-step-N`).
    Azure OpenAI: `<base>.ft-<hex>`.
    """
    model = model.strip()
    if model.startswith("ft:"):
        parts = model.split(":")
        return parts[1] if len(parts) > 1 and parts[1] else model
    azure = _AZURE_TUNED.match(model)
    if azure is not None:
        return azure.group("base")
    return model


def load_model_table(path: Path | None = None) -> ModelTable:
    """Read a model table; the packaged one is cached after the first read."""
    if path is None:
        return _packaged_model_table()
    return _parse_model_table(json.loads(path.read_text(encoding="utf-8")))


@cache
def _packaged_model_table() -> ModelTable:
    return _parse_model_table(json.loads(DEFAULT_MODEL_TABLE_PATH.read_text(encoding="utf-8")))


def _parse_model_table(raw: Mapping[str, Any]) -> ModelTable:
    default_limit = int(raw.get("default_example_token_limit", 65536))
    snapshots: dict[str, ModelSpec] = {}
    aliases: dict[str, str] = {}
    for name, entry in raw["models"].items():
        encoding = str(entry["encoding"])
        if encoding not in KNOWN_ENCODINGS:
            raise ValueError(f"model table: {name} names unknown encoding {encoding!r}")
        snapshots[name] = ModelSpec(
            requested=name,
            base_model=name,
            encoding=encoding,
            example_token_limit=int(entry.get("example_token_limit", default_limit)),
            limit_confirmed=bool(entry.get("limit_confirmed", False)),
        )
        for alias in entry.get("aliases", []):
            aliases[str(alias)] = name
    families = tuple(
        _Family(
            prefix=str(entry["prefix"]),
            encoding=str(entry["encoding"]),
            example_token_limit=int(entry.get("example_token_limit", default_limit)),
            limit_confirmed=bool(entry.get("limit_confirmed", False)),
        )
        for entry in raw.get("families", [])
    )
    return ModelTable(snapshots=snapshots, aliases=aliases, families=families)


def resolve_model(model: str, table: ModelTable | None = None) -> ModelSpec:
    """Resolve an alias, snapshot or tuned model name against the (packaged) table."""
    return (table or load_model_table()).resolve(model)


def get_encoding(name: str) -> tiktoken.Encoding:
    """tiktoken caches encodings per process, so this is cheap after the first call.

    Offline machines need `TIKTOKEN_CACHE_DIR` pointing at the rank files.
    """
    encoding: tiktoken.Encoding = tiktoken.get_encoding(name)
    return encoding


def preload_encodings() -> None:
    """Load every known encoding; a good `initializer=` for the ingest process pool."""
    for name in KNOWN_ENCODINGS:
        get_encoding(name)


# Built once: json.dumps with options builds a new encoder on every call.
# Values come from json.loads, so they cannot be circular.
_COMPACT_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False)


def compact_json(value: object) -> str:
    """The one serialization used both for output lines and for counting JSON values."""
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
    messages: Sequence[Mapping[str, Any]], extras: Sequence[object] = ()
) -> tuple[list[str], list[bool], int]:
    """The texts to encode for one conversation, which of them are trained on, and the
    conversation's fixed overhead in tokens.

    A text is "trained on" when it is what an assistant message with weight 1
    (or no weight) writes: its content and its tool or function calls. The
    cookbook reports these as the assistant tokens. `extras` are example-level
    JSON values (tools, functions), counted once each.
    """
    texts: list[str] = []
    trained: list[bool] = []
    overhead = TOKENS_PER_CONVERSATION
    for message in messages:
        overhead += TOKENS_PER_MESSAGE
        learns = message.get("role") == "assistant" and message.get("weight", 1) != 0
        for key, value in message.items():
            if key == "weight" or value is None:
                continue
            if key == "name":
                overhead += TOKENS_PER_NAME
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
def token_counter(encoding_name: str) -> Callable[[str], int]:
    """A function giving the number of tokens of a text, as len(encode_ordinary(text)).

    tiktoken's `encode_ordinary` turns every token into a Python int in a new
    list, which costs about as much as the encoding itself for long texts.
    The buffer that `encode_to_numpy` uses internally avoids that; when this
    tiktoken version lacks it, the public method is used. Tests check that
    both give the same counts.
    """
    encoding = get_encoding(encoding_name)
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


def encoded_lengths(texts: Sequence[str], encoding_name: str, threads: int = 1) -> list[int]:
    """Token lengths of many texts; with threads > 1 the texts are split into slices.

    tiktoken releases the GIL while it encodes, so threads help inside one
    process. Each thread gets one contiguous slice instead of one task per
    text: per-task executor overhead would cost more than encoding a short text.
    """
    count = token_counter(encoding_name)
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
