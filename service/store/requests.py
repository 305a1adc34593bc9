"""Per-request bookkeeping in Redis: tenants' request budgets and idempotency keys."""

from __future__ import annotations

import json
from typing import Any

from redis.asyncio import Redis

from service.store.keys import Keys


class RequestStore:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    async def spend(self, tenant: str, window: int, *, window_seconds: int) -> int:
        """Count one request in the tenant's window; returns the count so far."""
        key = self.keys.rate(tenant, window)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, window_seconds * 2)
            count, _ = await pipe.execute()
        return int(count)

    async def claim_key(self, key: str, claim: dict[str, Any], *, ttl: int) -> bool:
        """Take an idempotency key; False when someone already holds or used it."""
        redis_key = self.keys.idempotency_entry(key)
        return bool(await self.redis.set(redis_key, json.dumps(claim), nx=True, ex=ttl))

    async def read_key(self, key: str) -> dict[str, Any]:
        value = json.loads(await self.redis.get(self.keys.idempotency_entry(key)) or "{}")
        return value if isinstance(value, dict) else {}

    async def release_key(self, key: str) -> None:
        await self.redis.delete(self.keys.idempotency_entry(key))

    async def finish_key(self, key: str, record: dict[str, Any], *, ttl: int) -> None:
        payload = json.dumps(record, ensure_ascii=False)
        await self.redis.set(self.keys.idempotency_entry(key), payload, ex=ttl)
