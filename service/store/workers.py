"""Worker liveness and the queue round-trip check, in Redis.

Each worker process writes its id and the current time into one sorted set
every few seconds; readiness counts entries newer than the TTL, so a worker
that died without saying goodbye drops out on its own, and stale entries are
pruned by whoever writes next. `ping` records which request a ping task ran
under, so an operator (or a test) can check the queue end to end.
"""

from __future__ import annotations

import time

from redis.asyncio import Redis

from service.store.keys import Keys

PING_TTL_SECONDS = 300


class WorkerStore:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    async def beat(self, worker_id: str, *, ttl: float) -> None:
        now = time.time()
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(self.keys.workers, {worker_id: now})
            pipe.zremrangebyscore(self.keys.workers, "-inf", now - ttl * 4)
            await pipe.execute()

    async def farewell(self, worker_id: str) -> None:
        await self.redis.zrem(self.keys.workers, worker_id)

    async def live(self, *, ttl: float) -> int:
        """Workers whose heartbeat is newer than `ttl` seconds."""
        return int(await self.redis.zcount(self.keys.workers, time.time() - ttl, "+inf"))

    async def record_ping(self, token: str, request_id: str) -> None:
        await self.redis.set(self.keys.ping(token), request_id, ex=PING_TTL_SECONDS)

    async def ping_request(self, token: str) -> str | None:
        value = await self.redis.get(self.keys.ping(token))
        return str(value) if value is not None else None

    async def take_turn(self, name: str, every_seconds: int) -> bool:
        """True for one caller per period (a chore only one process should do)."""
        return bool(await self.redis.set(self.keys.turn(name), "1", nx=True, ex=every_seconds))
