"""Worker liveness, read by the API's `/ready`.

Each worker process writes its id and the current time into one sorted set
every few seconds. Readiness counts entries newer than the TTL, so a worker
that died without saying goodbye drops out on its own; stale entries are
pruned by whoever writes next.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from redis.exceptions import RedisError

from service.resources import Resources

logger = logging.getLogger(__name__)


async def beat(resources: Resources, worker_id: str) -> None:
    now = time.time()
    key = resources.keys.workers
    async with resources.redis.pipeline(transaction=False) as pipe:
        pipe.zadd(key, {worker_id: now})
        pipe.zremrangebyscore(
            key, "-inf", now - resources.settings.worker_heartbeat_ttl_seconds * 4
        )
        await pipe.execute()


async def run_heartbeat(
    resources: Resources, worker_id: str, alive: Callable[[], bool] = lambda: True
) -> None:
    """Beat while `alive()` says the worker's polling loop still runs: a worker whose
    loop died must drop out of /ready rather than be counted forever."""
    interval = resources.settings.worker_heartbeat_seconds
    while alive():
        try:
            await beat(resources, worker_id)
        except (RedisError, OSError) as exc:
            # Redis may be restarting; readiness will say so. Keep trying.
            logger.warning("heartbeat failed", extra={"error": type(exc).__name__})
        await asyncio.sleep(interval)


async def farewell(resources: Resources, worker_id: str) -> None:
    with contextlib.suppress(RedisError, OSError):
        await resources.redis.zrem(resources.keys.workers, worker_id)
