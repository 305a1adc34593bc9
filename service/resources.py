"""Long-lived resources one process owns: Redis clients, stores, providers, pools.

The API's lifespan and the worker's startup both build a `Resources` with
`open_resources`, so the two processes talk to Redis and the providers the
same way, and close everything on the way out. Stores are made once here;
use cases take what they need from it.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import AbstractContextManager, AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Protocol

from arq.connections import ArqRedis
from redis.asyncio import ConnectionPool, Redis

from service import tasks
from service.domain.tokens import preload_encodings
from service.providers.registry import ProviderRegistry
from service.settings import Settings
from service.store.blobs import LocalBlobStore
from service.store.connection import lean_connections
from service.store.datasets import DatasetStore
from service.store.evaluations import EvaluationStore
from service.store.following import FollowSchedule
from service.store.jobs import JobStore
from service.store.keys import Keys
from service.store.requests import RequestStore
from service.store.shared import SharedRedis
from service.store.webhooks import WebhookStore
from service.store.workers import WorkerStore

logger = logging.getLogger(__name__)

# Short socket timeouts: a dead Redis must turn into a 503 quickly, not hang requests.
REDIS_SOCKET_TIMEOUT = 5.0


class FirstAttempts(Protocol):
    """Sends webhooks' first attempts from this process (`service.webhooks.sending`)."""

    def has_room(self) -> bool: ...

    def window_end(self) -> float: ...

    def send(self, delivery_id: str, tenant: str, window_end: float) -> None: ...

    def held_sends(self) -> AbstractContextManager[None]: ...


@dataclass
class Resources:
    settings: Settings
    keys: Keys
    redis: Redis
    queue: ArqRedis
    providers: ProviderRegistry
    blobs: LocalBlobStore
    executor: Executor | None = None
    # Where this process sends webhooks' first attempts itself (the worker does).
    local_sender: FirstAttempts | None = None
    datasets: DatasetStore = field(init=False)
    jobs: JobStore = field(init=False)
    following: FollowSchedule = field(init=False)
    webhooks: WebhookStore = field(init=False)
    workers: WorkerStore = field(init=False)
    requests: RequestStore = field(init=False)
    evaluations: EvaluationStore = field(init=False)

    def __post_init__(self) -> None:
        self.datasets = DatasetStore(self.redis, self.keys)
        self.jobs = JobStore(self.redis, self.keys)
        self.following = FollowSchedule(self.redis, self.keys)
        self.webhooks = WebhookStore(self.redis, self.keys)
        self.workers = WorkerStore(self.redis, self.keys)
        self.requests = RequestStore(self.redis, self.keys)
        self.evaluations = EvaluationStore(self.redis, self.keys)


def redis_client(settings: Settings) -> Redis:
    pool = ConnectionPool.from_url(
        settings.redis_url,
        decode_responses=True,
        socket_timeout=REDIS_SOCKET_TIMEOUT,
        socket_connect_timeout=REDIS_SOCKET_TIMEOUT,
        health_check_interval=30,
    )
    return SharedRedis.from_pool(lean_connections(pool))


def queue_client(settings: Settings) -> ArqRedis:
    """An arq pool that connects lazily, so the API starts even while Redis is down."""
    pool = ConnectionPool.from_url(
        settings.redis_url,
        socket_timeout=REDIS_SOCKET_TIMEOUT,
        socket_connect_timeout=REDIS_SOCKET_TIMEOUT,
    )
    return ArqRedis(
        connection_pool=lean_connections(pool),
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
        providers = ProviderRegistry.from_settings(settings)
        stack.push_async_callback(providers.aclose)
        blobs = LocalBlobStore(settings.data_dir)
        blobs.ensure()
        yield Resources(
            settings=settings,
            keys=Keys(settings.key_prefix),
            redis=redis,
            queue=queue,
            providers=providers,
            blobs=blobs,
            executor=executor,
        )


@contextmanager
def startup_heap_frozen() -> Iterator[None]:
    """Keep what startup built (modules, models, clients) out of every later full
    collection, for the life of the process's work.

    A full collection walks every tracked object; after startup that is some 80,000
    (the imports alone) that will live as long as the process, and the walks
    stalled the event loop: the chat proxy's p99 at 16 connections was 65 ms
    unfrozen and 10 ms frozen (docs/benchmarks.md). Unfrozen on the way out, so a
    process that starts the app several times (the tests) can still collect them.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


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
