"""Ids and timestamps as records and responses carry them."""

from __future__ import annotations

import secrets
import string
from datetime import UTC, datetime

_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str, length: int = 24) -> str:
    """Opaque, prefixed, random: `job_3Fh…`. 24 base62 chars is ~143 bits."""
    return prefix + "_" + "".join(secrets.choice(_ALPHABET) for _ in range(length))


def now_iso() -> str:
    """Now, ISO 8601 in UTC with milliseconds: `2026-12-01T09:30:00.123Z`."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def iso_from_unix(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def unix_from_iso(value: str | None) -> float | None:
    if value is None:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
