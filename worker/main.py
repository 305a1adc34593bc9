"""The arq worker: settings, resources, per-task log context, and the job follower.

`build_worker(settings)` returns a configured `arq.Worker` whose start-up also
starts this process's job follower (`service.jobs.following`); `python -m
worker` runs one until SIGINT/SIGTERM, letting running tasks and steps finish
for a short grace period (they are idempotent, so one that is cut off is
simply run again).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any, cast

from arq import cron
from arq.worker import Function, Worker, func
from redis.exceptions import RedisError

from service import tasks
from service.datasets.removal import sweep_at_start
from service.evaluations.run import ProviderBounds
from service.jobs.following import IDLE_SECONDS as FOLLOW_IDLE_SECONDS
from service.jobs.following import JobFollower
from service.logs import log_context, request_id_var
from service.providers.base import ProviderError
from service.resources import ingest_pool, open_resources, queue_client, startup_heap_frozen
from service.settings import Settings
from service.webhooks.delivery import delivery_client
from service.webhooks.sending import LocalSender
from worker import heartbeat
from worker.context import WorkerContext
from worker.task_lock import lock_seconds
from worker.tasks import TaskSpec, cron_jobs, task_functions

logger = logging.getLogger(__name__)

# Seconds to let running tasks finish after SIGTERM before cancelling them.
SHUTDOWN_GRACE_SECONDS = 10

TaskBody = Callable[..., Awaitable[Any]]


def with_job_context(spec: TaskSpec) -> TaskBody:
    """Set the request id the API passed along and tag log lines with job and try."""

    body = spec.body

    @functools.wraps(body)
    async def run(
        ctx: WorkerContext, *args: Any, request_id: str | None = None, **kwargs: Any
    ) -> Any:
        token = request_id_var.set(request_id)
        try:
            with log_context(task=spec.name, arq_job=ctx.get("job_id"), job_try=ctx.get("job_try")):
                return await body(ctx, *args, **kwargs)
        finally:
            request_id_var.reset(token)

    return run


def _function(spec: TaskSpec, *, timeout: float) -> Function:
    return func(
        with_job_context(spec),  # type: ignore[arg-type]
        name=spec.name,
        timeout=timeout,
        max_tries=spec.max_tries,
    )


def _every(seconds: int) -> dict[str, Any]:
    """arq cron fields for "every N seconds" (N below 60) or "every N minutes"."""
    if seconds < 60:
        return {"second": set(range(0, 60, seconds))}
    return {"minute": set(range(0, 60, max(1, seconds // 60))), "second": 0}


# How often arq looks for queued tasks. A dataset's validation waits up to this
# long to start: 0.25 s was a third of a 20 MiB upload's time on the worker
# path. An idle worker spends about 0.8 % of a core on it (0.4 % at 0.25 s).
POLL_SECONDS = 0.1


def build_worker(
    settings: Settings,
    *,
    burst: bool = False,
    handle_signals: bool = True,
    poll_delay: float = POLL_SECONDS,
    follow_idle_seconds: float = FOLLOW_IDLE_SECONDS,
    shutdown_grace: int = SHUTDOWN_GRACE_SECONDS,
) -> Worker:
    """A worker bound to the running event loop (construct it inside `async` code)."""
    worker_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
    heartbeat_task: asyncio.Task[None] | None = None

    def loop_running() -> bool:
        main_task = worker.main_task
        return main_task is None or not main_task.done()

    async def startup(ctx: dict[str, Any]) -> None:
        nonlocal heartbeat_task
        stack = AsyncExitStack()
        executor = stack.enter_context(ingest_pool())
        resources = await stack.enter_async_context(open_resources(settings, executor=executor))
        await sweep_at_start(resources)
        ctx["exit_stack"] = stack
        ctx["resources"] = resources
        ctx["worker_id"] = worker_id
        ctx["provider_bounds"] = ProviderBounds(settings.evaluation_concurrency_per_provider)
        # arq copies ctx for each job, so shared clients must exist before the first one.
        ctx["webhook_client"] = await stack.enter_async_context(
            delivery_client(allow_private=settings.webhook_allow_private_networks)
        )
        # Webhooks' first attempts go out from here, not through the queue.
        resources.local_sender = ctx["local_sender"] = LocalSender(resources, ctx["webhook_client"])
        try:
            await resources.providers.learn_models()
        except ProviderError as exc:  # a provider that is down is asked again later
            logger.warning(
                "could not ask providers about their models", extra={"error": exc.message}
            )
        follower = JobFollower(
            resources,
            capacity=settings.worker_max_jobs,
            lease_seconds=lock_seconds(settings.task_timeout_seconds),
            step_timeout=settings.task_timeout_seconds,
            # arq stops picking work on SIGTERM; so does the follower.
            may_claim=lambda: worker.allow_pick_jobs,
            idle_seconds=follow_idle_seconds,
        )
        follower.start()
        ctx["follower"] = follower
        await resources.workers.beat(worker_id, ttl=settings.worker_heartbeat_ttl_seconds)
        heartbeat_task = asyncio.create_task(
            heartbeat.run_heartbeat(resources, worker_id, alive=loop_running)
        )
        stack.enter_context(startup_heap_frozen())
        logger.info("worker started", extra={"worker_id": worker_id})

    async def shutdown(ctx: dict[str, Any]) -> None:
        typed = cast(WorkerContext, ctx)
        if "follower" in typed:
            await typed["follower"].stop()
        if "local_sender" in typed:
            await typed["local_sender"].stop()
        if heartbeat_task is not None:
            heartbeat_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat_task
        if "resources" in typed:
            with contextlib.suppress(RedisError, OSError):
                await typed["resources"].workers.farewell(worker_id)
        if "exit_stack" in typed:
            await typed["exit_stack"].aclose()
        logger.info("worker stopped", extra={"worker_id": worker_id})

    timeout = settings.task_timeout_seconds
    functions = [
        _function(spec, timeout=spec.timeout(settings) if spec.timeout else timeout)
        for spec in task_functions()
    ]
    crons = [
        cron(
            with_job_context(spec),  # type: ignore[arg-type]
            name=spec.name,
            run_at_startup=True,
            timeout=timeout,
            unique=True,
            **_every(settings.reconcile_every_seconds),
        )
        for spec in cron_jobs()
    ]

    worker = Worker(
        functions=functions,
        cron_jobs=crons,
        redis_pool=queue_client(settings),
        queue_name=tasks.QUEUE_NAME,
        on_startup=startup,
        on_shutdown=shutdown,
        job_serializer=tasks.serialize,
        job_deserializer=tasks.deserialize,
        max_jobs=settings.worker_max_jobs,
        job_timeout=timeout,
        # Results are not read by anyone; keep them briefly so deterministic ids free up.
        keep_result=5,
        poll_delay=poll_delay,
        burst=burst,
        handle_signals=handle_signals,
        job_completion_wait=shutdown_grace,
        health_check_interval=30,
        retry_jobs=True,
        max_tries=25,
    )
    # arq sizes the lock on a running task by the longest function timeout, which
    # would let the validation's long limit delay every crashed task's retry; long
    # tasks refresh their lock instead (worker.task_lock).
    worker.in_progress_timeout_s = lock_seconds(settings.task_timeout_seconds)
    return worker


async def close_worker(worker: Worker) -> None:
    """Stop a worker and release its Redis pool.

    arq's own `Worker.close()` calls redis-py's deprecated `close()`; this does
    the same steps with `aclose()` so shutdown stays warning-free. It also ends
    arq's loop at its next poll rather than cancelling it: a cancellation that
    lands while redis-py un-WATCHes a pipeline leaves that pipeline holding a
    connection, which the garbage collector later reports as unclosed.
    """
    main = worker.main_task
    worker.allow_pick_jobs = False
    running = [task for task in worker.tasks.values() if not task.done()]
    logger.info("worker stopping", extra={"tasks_cancelled": len(running)})
    for task in running:
        task.cancel()
    await asyncio.gather(*running, return_exceptions=True)
    if main is not None and not main.done():
        # Burst mode with a budget of zero jobs returns from the loop after the
        # current iteration; cancelling stays the fallback for a stuck loop.
        worker.burst = True
        worker.max_burst_jobs = 0
        await asyncio.wait({main}, timeout=max(5.0, 4 * worker.poll_delay_s))
        while not main.done():
            main.cancel()
            await asyncio.wait({main}, timeout=0.5)
    if main is not None:
        try:
            await main
        except asyncio.CancelledError:
            pass
        except (RedisError, OSError) as exc:
            # arq's loop ends when Redis goes away; still release everything below.
            logger.warning("worker loop ended on a Redis error", extra={"error": repr(exc)})
    pool = worker.pool
    if pool is None:
        return
    with contextlib.suppress(RedisError, OSError):
        await pool.delete(worker.health_check_key)
    if worker.on_shutdown is not None:
        await worker.on_shutdown(worker.ctx)
    await pool.aclose(close_connection_pool=True)
    worker._pool = None
