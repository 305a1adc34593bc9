"""Shared Redis mechanics for JSON records: ids, timestamps, atomic updates, pages.

Each aggregate (dataset, job, webhook endpoint, delivery) is one JSON string
under its own key, plus a per-tenant sorted set (score = creation time) that
gives newest-first cursor pagination. Updates use WATCH/MULTI so the API and
the worker can both change a record without losing each other's writes.
"""

from __future__ import annotations

import json
import secrets
import string
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import WatchError

from service.errors import BadRequest

_ALPHABET = string.ascii_letters + string.digits
MAX_UPDATE_ATTEMPTS = 50


def new_id(prefix: str, length: int = 24) -> str:
    """Opaque, prefixed, random: `job_3Fh…`. 24 base62 chars is ~143 bits."""
    return prefix + "_" + "".join(secrets.choice(_ALPHABET) for _ in range(length))


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def iso_from_unix(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def dumps(record: dict[str, Any]) -> str:
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False)


def loads(raw: str | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    value = json.loads(raw)
    return value if isinstance(value, dict) else None


async def get_record(redis: Redis, key: str) -> dict[str, Any] | None:
    return loads(await redis.get(key))


async def get_records(redis: Redis, keys: list[str]) -> list[dict[str, Any]]:
    """Many records in one round trip (MGET), skipping ids that no longer exist."""
    if not keys:
        return []
    found = [loads(raw) for raw in await redis.mget(keys)]
    return [record for record in found if record is not None]


class RecordGone(Exception):
    """The record disappeared while being updated."""


async def update_record(
    redis: Redis,
    key: str,
    change: Callable[[dict[str, Any]], dict[str, Any] | None],
    *,
    extra: Callable[[Any, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Apply `change` atomically; it returns the new record or None for "no change".

    `extra(pipe, new_record)` may queue more commands in the same transaction
    (index updates), so the record and its indexes never disagree.
    """
    for _ in range(MAX_UPDATE_ATTEMPTS):
        async with redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(key)
                current = loads(await pipe.get(key))
                if current is None:
                    raise RecordGone(key)
                updated = change(dict(current))
                if updated is None:
                    await pipe.unwatch()
                    return current
                pipe.multi()
                pipe.set(key, dumps(updated))
                if extra is not None:
                    extra(pipe, updated)
                await pipe.execute()
                return updated
            except WatchError:
                continue
    raise RuntimeError(f"could not update {key}: too much contention")


@dataclass(frozen=True, slots=True)
class Page:
    ids: list[str]
    has_more: bool


async def page_ids(redis: Redis, index_key: str, *, limit: int, after: str | None) -> Page:
    """Newest first. `after` is the last id of the previous page."""
    if after is None:
        start = 0
    else:
        rank = await redis.zrevrank(index_key, after)
        if rank is None:
            raise BadRequest(f"after: {after!r} is not an id in this list", code="invalid_cursor")
        start = int(rank) + 1
    ids = await redis.zrevrange(index_key, start, start + limit)
    return Page(ids=list(ids[:limit]), has_more=len(ids) > limit)


def creation_score() -> float:
    return time.time()
