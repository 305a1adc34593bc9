"""Training cost estimate: epochs, billed tokens, steps and price.

Epochs follow the cookbook's heuristic for `n_epochs: "auto"`: 3, raised so
that small datasets see about 100 examples in total (at most 25 epochs),
lowered so that large ones see about 25,000 (at least 1 epoch). Billed tokens
are epochs times the sum over examples of min(limit, tokens of the example),
because the provider truncates long examples instead of billing them whole.

Prices come with the model's catalog entry, from a dated table file
(`service/data/prices-*.json`), so a price change is a data change with a
date on it, never a code change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from service.domain.catalog import ModelSpec

TARGET_EXAMPLES_SEEN_MIN = 100
TARGET_EXAMPLES_SEEN_MAX = 25_000
DEFAULT_EPOCHS = 3
MAX_AUTO_EPOCHS = 25
MIN_AUTO_EPOCHS = 1

# The provider's "auto" batch size is not published. Observed jobs use about
# 0.2% of the examples, at least 1 and at most 256; steps are only an estimate.
AUTO_BATCH_FRACTION = 0.002
MAX_BATCH_SIZE = 256


def default_epochs(example_count: int) -> int:
    """The cookbook's `n_epochs: auto` heuristic."""
    if example_count <= 0:
        return DEFAULT_EPOCHS
    if example_count * DEFAULT_EPOCHS < TARGET_EXAMPLES_SEEN_MIN:
        return min(MAX_AUTO_EPOCHS, TARGET_EXAMPLES_SEEN_MIN // example_count)
    if example_count * DEFAULT_EPOCHS > TARGET_EXAMPLES_SEEN_MAX:
        return max(MIN_AUTO_EPOCHS, TARGET_EXAMPLES_SEEN_MAX // example_count)
    return DEFAULT_EPOCHS


def default_batch_size(example_count: int) -> int:
    return max(1, min(MAX_BATCH_SIZE, math.ceil(example_count * AUTO_BATCH_FRACTION)))


def training_steps(example_count: int, n_epochs: int | None, batch_size: int | None) -> int:
    """Optimizer steps of a job: batches per epoch times epochs (None means "auto")."""
    epochs = n_epochs if n_epochs is not None else default_epochs(example_count)
    batch = batch_size if batch_size is not None else default_batch_size(example_count)
    return math.ceil(example_count / batch) * epochs


@dataclass(frozen=True, slots=True)
class Estimate:
    """What a training job on this dataset would cost, before anything is spent."""

    model: str
    n_epochs: int
    n_epochs_auto: bool
    batch_size: int
    batch_size_auto: bool
    steps: int
    billed_tokens_per_epoch: int
    billed_tokens: int
    training_price_per_million: float | None
    cost_usd: float | None
    currency: str
    price_table_as_of: str
    price_source: str


def estimate_training(
    *,
    spec: ModelSpec,
    example_count: int,
    billed_tokens_per_epoch: int,
    n_epochs: int | None = None,
    batch_size: int | None = None,
) -> Estimate:
    """Estimate a job. `billed_tokens_per_epoch` is Σ min(limit, tokens of example).

    `n_epochs` / `batch_size` override the automatic choices (what a job
    request's hyperparameters would set). The cost is None when the catalog
    has no price for the base model.
    """
    if n_epochs is not None and n_epochs < 1:
        raise ValueError("n_epochs must be at least 1")
    if batch_size is not None and batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    epochs = n_epochs if n_epochs is not None else default_epochs(example_count)
    batch = batch_size if batch_size is not None else default_batch_size(example_count)
    steps = training_steps(example_count, epochs, batch)
    billed = epochs * billed_tokens_per_epoch
    price = spec.price
    cost = None if price is None else round(billed / 1_000_000 * price.training_per_million, 6)
    return Estimate(
        model=spec.base_model,
        n_epochs=epochs,
        n_epochs_auto=n_epochs is None,
        batch_size=batch,
        batch_size_auto=batch_size is None,
        steps=steps,
        billed_tokens_per_epoch=billed_tokens_per_epoch,
        billed_tokens=billed,
        training_price_per_million=None if price is None else price.training_per_million,
        cost_usd=cost,
        currency=price.currency if price else "USD",
        price_table_as_of=price.as_of if price else "",
        price_source=price.source if price else "no price is known for this model",
    )
