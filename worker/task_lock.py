"""Keeping a long task's arq lock alive while it runs.

arq marks a running task with an in-progress key that expires after the
worker's `in_progress_timeout_s`; until then no other worker may start the
same task, and after it a task whose worker died is picked up again. We keep
that expiry short (TASK_TIMEOUT_SECONDS + 10 s, see `worker.main`) so a
crash delays ordinary work briefly; a task that may legitimately run longer
(dataset validation, with its own time limit) holds its lock by refreshing
the key while it works. If its worker dies, the refreshing stops and the
task is free again one short expiry later.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis.exceptions import RedisError

from service import tasks
from worker.context import WorkerContext

logger = logging.getLogger(__name__)


def lock_seconds(task_timeout: float) -> float:
    """How long a task's arq lock lasts without a refresh."""
    return task_timeout + 10.0


@asynccontextmanager
async def held_task_lock(ctx: WorkerContext) -> AsyncIterator[None]:
    resources = ctx["resources"]
    job_id = ctx.get("job_id")
    if job_id is None:  # called outside arq (a test calling the body directly)
        yield
        return
    key = tasks.ARQ_IN_PROGRESS_KEY_PREFIX + job_id
    ttl_ms = int(lock_seconds(resources.settings.task_timeout_seconds) * 1000)

    async def refresh() -> None:
        while True:
            await asyncio.sleep(ttl_ms / 3000)
            try:
                await resources.queue.pexpire(key, ttl_ms)
            except RedisError as exc:
                logger.warning("could not refresh a task lock", extra={"error": repr(exc)})

    refresher = asyncio.create_task(refresh())
    try:
        yield
    finally:
        refresher.cancel()
        await asyncio.wait({refresher})  # a cancel aimed at the task itself still reaches it
