"""Deterministic train/validation split.

Each example gets a key: a BLAKE2b hash of its normalized line, keyed by the
seed. The validation set is the `round(n x fraction)` examples with the
smallest keys (at least 1 and at most n - 1), ties broken by position. So the
same file and seed always give the same split, a different seed gives an
independent one, and exact duplicates always land on the same side, which
keeps copies of training examples out of the validation set.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

SEED_BYTES = 8


def split_key(seed: int, normalized_line: bytes) -> int:
    if not 0 <= seed < 2 ** (8 * SEED_BYTES):
        raise ValueError(f"seed must be between 0 and {2 ** (8 * SEED_BYTES) - 1}")
    digest = hashlib.blake2b(
        normalized_line, digest_size=8, key=seed.to_bytes(SEED_BYTES, "big")
    ).digest()
    return int.from_bytes(digest, "big")


def validation_size(example_count: int, fraction: float) -> int:
    if not 0.0 < fraction < 1.0:
        raise ValueError("validation_fraction must be between 0 and 1 (exclusive)")
    if example_count < 2:
        return 0
    return min(example_count - 1, max(1, round(example_count * fraction)))


def choose_validation(keys: Sequence[int], fraction: float) -> set[int]:
    """Positions of the examples that go to the validation set."""
    size = validation_size(len(keys), fraction)
    ranked = sorted(range(len(keys)), key=lambda index: (keys[index], index))
    return set(ranked[:size])
