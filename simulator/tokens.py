"""Token counting with tiktoken, by the rule OpenAI's cookbook uses for chat examples.

The encodings are loaded once per process; tiktoken reads them from
`TIKTOKEN_CACHE_DIR` (the machines that run this have no internet).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

import tiktoken

TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
TOKENS_PER_CONVERSATION = 3


@lru_cache(maxsize=4)
def encoding(name: str) -> tiktoken.Encoding:
    return tiktoken.get_encoding(name)


def count_text(encoding_name: str, text: str) -> int:
    return len(encoding(encoding_name).encode(text, disallowed_special=()))


def message_text(value: Any) -> str:
    """The text of a message field: strings as they are, content parts joined, else JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(part, Mapping) for part in value):
        texts = [part.get("text") for part in value]
        if all(isinstance(text, str) for text in texts):
            return "".join(str(text) for text in texts)
    return json.dumps(value, ensure_ascii=False)


def count_messages(encoding_name: str, messages: Iterable[Mapping[str, Any]]) -> int:
    """3 tokens per message plus every value's tokens (+1 for a name), plus 3 overall."""
    total = TOKENS_PER_CONVERSATION
    for message in messages:
        total += TOKENS_PER_MESSAGE
        for key, value in message.items():
            if value is None:
                continue
            total += count_text(encoding_name, message_text(value))
            if key == "name":
                total += TOKENS_PER_NAME
    return total


def split_into_pieces(encoding_name: str, text: str, tokens_per_piece: int) -> list[str]:
    """Cut text into pieces of about `tokens_per_piece` tokens, never inside a character.

    A Japanese character often spans tokens, so bytes are gathered until they decode.
    """
    enc = encoding(encoding_name)
    pieces: list[str] = []
    pending = b""
    tokens = enc.encode(text, disallowed_special=())
    for start in range(0, len(tokens), tokens_per_piece):
        pending += enc.decode_bytes(tokens[start : start + tokens_per_piece])
        try:
            pieces.append(pending.decode("utf-8"))
        except UnicodeDecodeError:
            continue
        pending = b""
    if pending:
        pieces.append(pending.decode("utf-8", errors="ignore"))
    return [piece for piece in pieces if piece]


def truncate(encoding_name: str, text: str, max_tokens: int) -> tuple[str, bool]:
    """At most `max_tokens` tokens of text (whole characters only); True if it was cut."""
    enc = encoding(encoding_name)
    tokens = enc.encode(text, disallowed_special=())
    if len(tokens) <= max_tokens:
        return text, False
    return enc.decode_bytes(tokens[:max_tokens]).decode("utf-8", errors="ignore"), True
