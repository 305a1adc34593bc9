"""Summary numbers over the per-example token counts of a dataset."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TokenStats:
    """Token counts by the cookbook rule (see service.domain.tokens).

    `token_count` is the sum over valid examples; percentiles use the
    nearest-rank method, so they are always the count of a real example.
    `billed_tokens_per_epoch` is Σ min(limit, tokens of example).
    """

    token_count: int
    min: int
    max: int
    mean: float
    p50: int
    p90: int
    assistant_token_count: int
    examples_over_limit: int
    example_token_limit: int
    billed_tokens_per_epoch: int
    encoding: str


def nearest_rank(ordered: Sequence[int], fraction: float) -> int:
    if not ordered:
        return 0
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def summarize_tokens(
    per_example: Sequence[int],
    *,
    assistant_token_count: int,
    example_token_limit: int,
    encoding: str,
) -> TokenStats:
    ordered = sorted(per_example)
    total = sum(ordered)
    return TokenStats(
        token_count=total,
        min=ordered[0] if ordered else 0,
        max=ordered[-1] if ordered else 0,
        mean=round(total / len(ordered), 2) if ordered else 0.0,
        p50=nearest_rank(ordered, 0.5),
        p90=nearest_rank(ordered, 0.9),
        assistant_token_count=assistant_token_count,
        examples_over_limit=sum(1 for tokens in ordered if tokens > example_token_limit),
        example_token_limit=example_token_limit,
        billed_tokens_per_epoch=sum(min(tokens, example_token_limit) for tokens in ordered),
        encoding=encoding,
    )
