"""Every task the worker runs, registered under the names in `service.tasks`.

Each body is a thin arq binding: it calls one use case and turns "try again
in N seconds" into arq's `Retry`. Jobs are followed beside arq, by the
follower (`service.jobs.following`) each worker process runs. The reconciler
cron makes sure no work is forgotten: every unfinished job is followed, every pending
delivery its next attempt, every dataset still validating its validation,
every unfinished evaluation its next run; losing a queue entry (a Redis
failover, a flushed queue, an expired arq job) delays work by at most one
reconcile interval and never loses it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from arq.worker import Retry

from service import tasks
from service.datasets.removal import sweep_orphan_files
from service.datasets.validation import VERDICT_MARGIN_SECONDS, DatasetValidation
from service.evaluations.run import EvaluationRun
from service.jobs.sync import JobSync
from service.logs import request_id_var
from service.settings import Settings
from service.webhooks.delivery import WebhookDelivery
from worker.context import WorkerContext
from worker.task_lock import held_task_lock

logger = logging.getLogger(__name__)

# Polling and waiting for a delivery slot re-run a task through arq's Retry, so its
# tries are effectively unbounded; the use cases bound their own errors and attempts.
UNBOUNDED_TRIES = 1_000_000
# Orphaned files are looked for at most this often (one worker does it).
SWEEP_EVERY_SECONDS = 3600

TaskBody = Callable[..., Awaitable[Any]]


def _retry_or(outcome: str | float) -> str:
    if isinstance(outcome, float):
        raise Retry(defer=outcome)
    return outcome


async def deliver_webhook(ctx: WorkerContext, delivery_id: str, attempt: int) -> str:
    delivery = WebhookDelivery(ctx["resources"], ctx["webhook_client"])
    return _retry_or(await delivery.attempt(delivery_id, attempt))


async def run_evaluation(ctx: WorkerContext, evaluation_id: str) -> str:
    run = EvaluationRun(ctx["resources"], ctx["provider_bounds"])
    return _retry_or(await run.step(evaluation_id))


async def validate_dataset(ctx: WorkerContext, dataset_id: str) -> str:
    async with held_task_lock(ctx):
        return await DatasetValidation(ctx["resources"]).run(dataset_id)


async def ping(ctx: WorkerContext, token: str) -> str:
    """Records the request id it ran under: proves serializer, queue and correlation work."""
    await ctx["resources"].workers.record_ping(token, request_id_var.get() or "")
    return token


async def reconcile(ctx: WorkerContext) -> dict[str, int]:
    resources = ctx["resources"]
    counts = {
        "jobs": await JobSync(resources).requeue(),
        "deliveries": await WebhookDelivery(resources, ctx["webhook_client"]).requeue(),
        "validations": await DatasetValidation(resources).requeue(),
        "evaluations": await EvaluationRun(resources, ctx["provider_bounds"]).requeue(),
        "files_swept": 0,
    }
    if await resources.workers.take_turn("sweep", SWEEP_EVERY_SECONDS):
        counts["files_swept"] = await sweep_orphan_files(resources)
    if any(counts.values()):
        logger.info("reconciler rescheduled work", extra=counts)
    return counts


@dataclass(frozen=True, slots=True)
class TaskSpec:
    name: str
    body: TaskBody
    # None: the worker's default.
    max_tries: int | None = None
    # How long one run may take; None: TASK_TIMEOUT_SECONDS.
    timeout: Callable[[Settings], float] | None = None


def task_functions() -> list[TaskSpec]:
    return [
        TaskSpec(tasks.PING, ping),
        TaskSpec(tasks.DELIVER_WEBHOOK, deliver_webhook, UNBOUNDED_TRIES),
        # Each run scores for a bounded time and hands over to the next through Retry.
        TaskSpec(tasks.RUN_EVALUATION, run_evaluation, UNBOUNDED_TRIES),
        # Its own limit, sized for the largest upload (validation is the slow one),
        # enforced by the validation itself; the queue's is a backstop just after it.
        TaskSpec(
            tasks.VALIDATE_DATASET,
            validate_dataset,
            5,
            lambda settings: settings.validation_timeout_seconds + VERDICT_MARGIN_SECONDS,
        ),
    ]


def cron_jobs() -> list[TaskSpec]:
    return [TaskSpec(tasks.RECONCILE, reconcile)]
