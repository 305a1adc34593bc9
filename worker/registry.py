"""Every task the worker runs, by name (the names in `service.tasks`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from service.settings import Settings
from worker.dataset_validation import validate_dataset
from worker.diagnostics import ping
from worker.job_sync import SYNC_MAX_TRIES, sync_job
from worker.reconciler import reconcile
from worker.webhook_delivery import DELIVERY_MAX_TRIES, deliver_webhook

TaskBody = Callable[..., Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class TaskSpec:
    body: TaskBody
    # None: the worker's default.
    max_tries: int | None = None
    # How long one run may take; None: TASK_TIMEOUT_SECONDS.
    timeout: Callable[[Settings], float] | None = None


def task_functions() -> list[TaskSpec]:
    return [
        TaskSpec(ping),
        # Polling re-schedules through arq's Retry, so tries are effectively unbounded;
        # job_sync bounds consecutive errors itself.
        TaskSpec(sync_job, SYNC_MAX_TRIES),
        # A delivery waiting for its tenant's slot re-runs through Retry too; attempts
        # that reach the receiver are counted by the delivery itself.
        TaskSpec(deliver_webhook, DELIVERY_MAX_TRIES),
        # Its own limit, sized for the largest upload (validation is the slow one).
        TaskSpec(validate_dataset, 5, lambda settings: settings.validation_timeout_seconds),
    ]


def cron_jobs() -> list[TaskBody]:
    return [reconcile]
