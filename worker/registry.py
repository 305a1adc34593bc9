"""Every task the worker runs, by name (the names in `service.tasks`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from worker.dataset_validation import validate_dataset
from worker.diagnostics import ping
from worker.job_sync import SYNC_MAX_TRIES, sync_job
from worker.reconciler import reconcile
from worker.webhook_delivery import deliver_webhook

TaskBody = Callable[..., Awaitable[Any]]


def task_functions() -> list[tuple[TaskBody, int | None]]:
    """(task body, max tries or None for the worker default)."""
    return [
        (ping, None),
        # Polling re-schedules through arq's Retry, so tries are effectively unbounded;
        # job_sync bounds consecutive errors itself.
        (sync_job, SYNC_MAX_TRIES),
        (deliver_webhook, 3),
        (validate_dataset, 5),
    ]


def cron_jobs() -> list[TaskBody]:
    return [reconcile]
