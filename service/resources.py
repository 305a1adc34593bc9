"""Long-lived resources one process owns: Redis clients, HTTP clients, pools.

The API's lifespan and the worker's startup both build a `Resources` with
`open_resources`, so the two processes talk to Redis and the provider the same
way, and close everything on the way out.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass

import httpx
import openai
from arq.connections import ArqRedis
from redis.asyncio import ConnectionPool, Redis
from redis.exceptions import RedisError

from service import tasks
from service.domain.tokens import preload_encodings
from service.errors import Unavailable
from service.providers import Provider, build_provider
from service.settings import Settings
from service.store.blobs import LocalBlobStore
from service.store.keys import Keys

logger = logging.getLogger(__name__)

# Short socket timeouts: a dead Redis must turn into a 503 quickly, not hang requests.
REDIS_SOCKET_TIMEOUT = 5.0


@dataclass
class Resources:
    settings: Settings
    keys: Keys
    redis: Redis
    queue: ArqRedis
    http: httpx.AsyncClient
    provider: Provider | None
    blobs: LocalBlobStore
    # Verifies OpenAI's own webhooks (only when OPENAI_WEBHOOK_SECRET is set).
    openai_webhooks: openai.AsyncOpenAI | None = None
    executor: Executor | None = None

    def require_provider(self) -> Provider:
        if self.provider is None:
            raise Unavailable("No provider is configured (set OPENAI_API_KEY)", code="no_provider")
        return self.provider


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
        provider = build_provider(settings)
        if provider is not None:
            stack.push_async_callback(provider.aclose)
        openai_webhooks = None
        if settings.openai_webhook_secret is not None:
            openai_webhooks = openai.AsyncOpenAI(
                api_key="verification-only",
                webhook_secret=settings.openai_webhook_secret.get_secret_value(),
            )
            stack.push_async_callback(openai_webhooks.close)
        blobs = LocalBlobStore(settings.data_dir)
        blobs.ensure()
        yield Resources(
            settings=settings,
            keys=Keys(settings.key_prefix),
            redis=redis,
            queue=queue,
            http=http,
            provider=provider,
            blobs=blobs,
            openai_webhooks=openai_webhooks,
            executor=executor,
        )


@contextmanager
def ingest_pool() -> Iterator[ProcessPoolExecutor]:
    """The process pool dataset parsing and tokenizing fan out over (API and worker alike).

    One process per core, spawned (not forked) so none inherits the event
    loop's state, started lazily on first use, stopped on exit.
    """
    executor = ProcessPoolExecutor(
        max_workers=max(1, os.cpu_count() or 1),
        mp_context=multiprocessing.get_context("spawn"),
        initializer=preload_encodings,
    )
    try:
        yield executor
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


async def sweep_at_start(resources: Resources) -> None:
    """Remove dataset files a killed process left behind; never blocks start-up."""
    from service.datasets import sweep_orphan_files  # the dataset glue imports Resources

    try:
        await sweep_orphan_files(resources)
    except (RedisError, OSError) as exc:
        logger.warning("could not sweep orphaned files at start", extra={"error": repr(exc)})
