"""Long-lived resources one process owns: Redis clients, HTTP clients, pools.

The API's lifespan and the worker's startup both build a `Resources` with
`open_resources`, so the two processes talk to Redis and the provider the same
way, and close everything on the way out.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from concurrent.futures import Executor
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import httpx
from arq.connections import ArqRedis
from redis.asyncio import ConnectionPool, Redis

from service import tasks
from service.settings import Settings
from service.store.keys import Keys

# Short socket timeouts: a dead Redis must turn into a 503 quickly, not hang requests.
REDIS_SOCKET_TIMEOUT = 5.0


@dataclass
class Resources:
    settings: Settings
    keys: Keys
    redis: Redis
    queue: ArqRedis
    http: httpx.AsyncClient
    executor: Executor | None = None


def redis_client(settings: Settings) -> Redis:
    client: Redis = Redis.from_url(
        settings.redis_url,
        decode_responses=True,
        socket_timeout=REDIS_SOCKET_TIMEOUT,
        socket_connect_timeout=REDIS_SOCKET_TIMEOUT,
        health_check_interval=30,
    )
    return client


def queue_client(settings: Settings) -> ArqRedis:
    """An arq pool that connects lazily, so the API starts even while Redis is down."""
    pool = ConnectionPool.from_url(
        settings.redis_url,
        socket_timeout=REDIS_SOCKET_TIMEOUT,
        socket_connect_timeout=REDIS_SOCKET_TIMEOUT,
    )
    return ArqRedis(
        connection_pool=pool,
        job_serializer=tasks.serialize,
        job_deserializer=tasks.deserialize,
        default_queue_name=tasks.QUEUE_NAME,
    )


@asynccontextmanager
async def open_resources(
    settings: Settings, *, executor: Executor | None = None
) -> AsyncIterator[Resources]:
    async with AsyncExitStack() as stack:
        redis = redis_client(settings)
        stack.push_async_callback(redis.aclose)
        queue = queue_client(settings)
        # The pool was passed in explicitly, so closing the client alone would leak it.
        stack.push_async_callback(queue.aclose, close_connection_pool=True)
        http = httpx.AsyncClient(timeout=httpx.Timeout(15.0), follow_redirects=False)
        stack.push_async_callback(http.aclose)
        yield Resources(
            settings=settings,
            keys=Keys(settings.key_prefix),
            redis=redis,
            queue=queue,
            http=http,
            executor=executor,
        )
