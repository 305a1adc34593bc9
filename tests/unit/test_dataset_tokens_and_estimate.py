"""The token rule, model resolution, the epochs heuristic and the cost estimate."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import tiktoken

from service.datasets.ingest import IngestOptions, ingest_file
from service.domain.catalog import UnknownModel, base_model_of
from service.domain.pricing import (
    default_batch_size,
    default_epochs,
    estimate_training,
)
from service.domain.tokens import (
    count_message_tokens,
    encoded_lengths,
    token_counter,
)
from service.providers.registry import packaged_catalog, packaged_spec, read_prices
from tests.unit.test_dataset_support import DATA, cookbook_count, valid_rows, write_jsonl


@pytest.mark.parametrize(
    ("model", "base", "encoding", "limit"),
    [
        ("gpt-4o-mini", "gpt-4o-mini-2024-07-18", "o200k_base", 65536),
        ("gpt-4o", "gpt-4o-2024-08-06", "o200k_base", 65536),
        ("gpt-4.1-nano", "gpt-4.1-nano-2025-04-14", "o200k_base", 65536),
        ("gpt-3.5-turbo", "gpt-3.5-turbo-0125", "cl100k_base", 16385),
        ("gpt-3.5-turbo-1106", "gpt-3.5-turbo-1106", "cl100k_base", 16385),
        ("gpt-3.5-turbo-0613", "gpt-3.5-turbo-0613", "cl100k_base", 4096),
        ("gpt-4", "gpt-4-0613", "cl100k_base", 8192),
        (
            "ft:gpt-4o-mini-2024-07-18:acme:bot:AbCd1234",
            "gpt-4o-mini-2024-07-18",
            "o200k_base",
            65536,
        ),
        ("ft:gpt-3.5-turbo-0125:acme::x:ckpt-step-10", "gpt-3.5-turbo-0125", "cl100k_base", 16385),
        ("gpt-4.1-2025-04-14.ft-0123abcd", "gpt-4.1-2025-04-14", "o200k_base", 65536),
        ("gpt-4o-2099-01-01", "gpt-4o-2099-01-01", "o200k_base", 65536),
        ("o4-mini-2025-04-16", "o4-mini-2025-04-16", "o200k_base", 65536),
    ],
)
def test_models_resolve_to_encoding_and_limit(
    model: str, base: str, encoding: str, limit: int
) -> None:
    spec = packaged_spec(model)
    assert (spec.base_model, spec.encoding, spec.example_token_limit) == (base, encoding, limit)


def test_unknown_model_is_refused() -> None:
    with pytest.raises(UnknownModel):
        packaged_spec("llama-3-8b")
    assert base_model_of("ft:") == "ft:"


def test_gpt41_limit_is_marked_unconfirmed() -> None:
    assert packaged_spec("gpt-4.1").limit_confirmed is False
    assert packaged_spec("gpt-4o-mini").limit_confirmed is True


def test_fast_counter_matches_encode_ordinary() -> None:
    texts = ["", "hello world", "西村ひろゆきBot", "<|endoftext|> spelled", "a" * 5000, "\ud800x"]
    for name in ("o200k_base", "cl100k_base"):
        encoding = tiktoken.get_encoding(name)
        expected = [len(encoding.encode_ordinary(text)) for text in texts]
        assert [token_counter(name)(text) for text in texts] == expected
        assert encoded_lengths(texts * 500, name, threads=2) == expected * 500


def test_non_string_values_count_as_documented() -> None:
    encoding = tiktoken.get_encoding("o200k_base")
    call = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    tools = [{"type": "function", "function": {"name": "f"}}]
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "part one"},
                {"type": "image_url", "image_url": {"url": "x"}},
            ],
            "name": "ann",
        },
        {"role": "assistant", "content": None, "tool_calls": call, "weight": 1},
    ]

    def n(text: str) -> int:
        return len(encoding.encode(text))

    compact_call = json.dumps(call, separators=(",", ":"))
    compact_tools = json.dumps(tools, separators=(",", ":"))
    expected = (
        3
        + n("user")
        + n("part one")
        + n("ann")
        + 1
        + 3
        + n("assistant")
        + n(compact_call)
        + n(compact_tools)
        + 3
    )
    assert count_message_tokens(messages, encoding, [tools]) == expected


@pytest.mark.parametrize(
    ("examples", "epochs"),
    [
        (1, 25),
        (3, 25),
        (4, 25),
        (5, 20),
        (10, 10),
        (33, 3),
        (34, 3),
        (100, 3),
        (8333, 3),
        (8334, 2),
        (12500, 2),
        (12501, 1),
        (30000, 1),
    ],
)
def test_default_epochs_follow_the_cookbook(examples: int, epochs: int) -> None:
    assert default_epochs(examples) == epochs


def test_batch_size_default() -> None:
    assert default_batch_size(10) == 1
    assert default_batch_size(1000) == 2
    assert default_batch_size(10**6) == 256


def test_estimate_numbers(tmp_path: Path) -> None:
    spec = packaged_spec("gpt-4o-mini")
    estimate = estimate_training(spec=spec, example_count=29, billed_tokens_per_epoch=3000)
    assert estimate.n_epochs == 3
    assert estimate.n_epochs_auto
    assert estimate.billed_tokens == 9000
    assert estimate.steps == 29 * 3
    assert estimate.cost_usd == pytest.approx(9000 / 1e6 * 3.0)
    assert estimate.price_table_as_of == "2026-11-01"

    override = estimate_training(
        spec=spec, example_count=29, billed_tokens_per_epoch=3000, n_epochs=2, batch_size=4
    )
    assert (override.n_epochs, override.steps, override.billed_tokens) == (
        2,
        math.ceil(29 / 4) * 2,
        6000,
    )

    custom = tmp_path / "prices.json"
    custom.write_text(
        json.dumps(
            {
                "as_of": "2030-01-01",
                "source": "test",
                "models": {"gpt-4o-mini-2024-07-18": {"training": 10}},
            }
        )
    )
    repriced = replace(spec, price=read_prices(custom)["gpt-4o-mini-2024-07-18"])
    priced = estimate_training(spec=repriced, example_count=29, billed_tokens_per_epoch=1_000_000)
    assert priced.cost_usd == pytest.approx(30.0)
    assert priced.price_table_as_of == "2030-01-01"
    unpriced = estimate_training(
        spec=packaged_spec("gpt-4"), example_count=29, billed_tokens_per_epoch=10
    )
    assert unpriced.cost_usd is None


def test_price_table_covers_the_default_models() -> None:
    catalog = packaged_catalog()
    for model in (
        "gpt-4o-2024-08-06",
        "gpt-4o-mini-2024-07-18",
        "gpt-4.1-2025-04-14",
        "gpt-4.1-mini-2025-04-14",
        "gpt-4.1-nano-2025-04-14",
        "gpt-3.5-turbo-0125",
    ):
        entry = catalog.find(model)
        assert entry is not None
        assert entry.price is not None


def test_report_estimate_uses_capped_tokens_and_epochs(tmp_path: Path) -> None:
    report = ingest_file(
        DATA / "hiroyuki.csv",
        tmp_path / "out.jsonl",
        IngestOptions(system_prompt="西村ひろゆきBot"),
    )
    assert report.estimate is not None
    assert report.estimate.n_epochs == 3  # 29 x 3 = 87 < 100 → min(25, 100 // 29) = 3
    assert report.estimate.billed_tokens == 3 * report.token_count

    source = write_jsonl(tmp_path / "ten.jsonl", valid_rows(10))
    ten = ingest_file(source, tmp_path / "out2.jsonl", IngestOptions(n_epochs=4))
    assert ten.estimate is not None
    assert ten.estimate.n_epochs == 4
    expected = sum(cookbook_count(row["messages"]) for row in valid_rows(10))
    assert ten.token_count == expected
    assert ten.tokens.p50 <= ten.tokens.p90 <= ten.tokens.max
