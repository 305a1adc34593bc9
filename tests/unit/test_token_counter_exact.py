# ruff: noqa: RUF001  (full-width digits and CJK punctuation are the point of this corpus)
"""The fast counter (bpe-openai) gives tiktoken's counts exactly, and tiktoken counts
when it is missing: token counts are never an approximation."""

from __future__ import annotations

import random
import sys

import pytest
import tiktoken

from service.domain import tokens
from service.domain.tokens import fast_counter, tiktoken_counter, token_counter

ENCODINGS = ("o200k_base", "cl100k_base")

EDGE_CASES = [
    "",
    " ",
    "hello world",
    "don't you're I'll we've",
    # Emoji: skin tones, ZWJ families, flags, keycaps, variation selectors.
    "👨‍👩‍👧‍👦 👍🏽 🏳️‍🌈 🇯🇵🇺🇸 1️⃣ ❤️‍🔥" * 7,
    "😀" * 300,
    # Whitespace runs of every kind, long and mixed with newlines.
    " " * 5000,
    "\t" * 700 + "x",
    "\n\n\t  \n" * 400,
    "\r\n" * 300,
    "   leading and trailing   ",
    "\u3000全角スペース\u3000\u3000",
    # Digits: long runs, grouped, decimals, mixed with letters.
    "1234567890" * 60,
    "3.14159 2,718,281 1e-9 0x1F 007 ٣٤٥ ４５６",
    "v2.0.1-rc3 abc123def456",
    # CJK text and punctuation, full-width and half-width.
    "西村ひろゆき、それってあなたの感想ですよね？「はい」。【注】『本』〜！" * 20,
    "中文标点：，。；！？（）《》“”‘’…… 한국어 문장입니다. ｶﾀｶﾅ",
    # Text that spells special tokens is ordinary text here.
    "<|endoftext|> <|fim_prefix|><|fim_middle|><|fim_suffix|> <|endofprompt|> <|im_start|>",
    "a" * 20000,
    "x\u200dy\u200b\ufeffz",
    "mixed English と日本語 text 123,456.78 !!! ??? ...",
    '{"role":"assistant","content":"JSON \\"quoted\\" \\u00e9"}',
    # A lone surrogate (possible in JSON input): tiktoken repairs it.
    "bad \ud800 surrogate",
]


def _corpus() -> list[str]:
    rnd = random.Random(20)
    pieces = [
        "abc",
        " XYZ",
        " 012",
        "　",
        "、",
        "。",
        "「",
        "」",
        "！",
        "？",
        "日本語",
        "😀",
        "👍🏽",
        "\n",
        "\t",
        "  ",
        "<|endoftext|>",
        "'s",
        "99",
        "é",
    ]
    mixed = ["".join(rnd.choice(pieces) for _ in range(rnd.randint(0, 300))) for _ in range(1500)]
    return EDGE_CASES + mixed


@pytest.mark.parametrize("name", ENCODINGS)
def test_service_counter_equals_tiktoken_on_a_mixed_corpus(name: str) -> None:
    encoding = tiktoken.get_encoding(name)
    corpus = _corpus()
    expected = [len(encoding.encode_ordinary(text)) for text in corpus]
    assert [token_counter(name)(text) for text in corpus] == expected
    assert [tiktoken_counter(name)(text) for text in corpus] == expected


@pytest.mark.parametrize("name", ENCODINGS)
def test_bpe_openai_is_installed_and_exact(name: str) -> None:
    fast = fast_counter(name)
    assert fast is not None, "bpe-openai is a dependency; without it counting is slower"
    encoding = tiktoken.get_encoding(name)
    corpus = [text for text in _corpus() if "\ud800" not in text]
    assert [fast(text) for text in corpus] == [len(encoding.encode_ordinary(t)) for t in corpus]


def test_without_bpe_openai_tiktoken_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    # An import of a module set to None in sys.modules raises ImportError: as if absent.
    monkeypatch.setitem(sys.modules, "bpe_openai._bindings", None)
    tokens.token_counter.cache_clear()
    try:
        assert fast_counter("o200k_base") is None
        encoding = tiktoken.get_encoding("o200k_base")
        assert token_counter("o200k_base")("西村ひろゆき 😀 123") == len(
            encoding.encode_ordinary("西村ひろゆき 😀 123")
        )
    finally:
        tokens.token_counter.cache_clear()


def test_an_encoding_bpe_openai_lacks_is_left_to_tiktoken() -> None:
    assert fast_counter("p50k_base") is None
