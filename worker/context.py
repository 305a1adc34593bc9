"""What every task receives as `ctx`."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any, TypedDict

from service.evaluations.run import ProviderBounds
from service.jobs.following import JobFollower
from service.resources import Resources
from service.webhooks.client import WebhookClient
from service.webhooks.sending import LocalSender


class WorkerContext(TypedDict, total=False):
    # Set by arq for each job.
    job_id: str
    job_try: int
    enqueue_time: Any
    score: int
    redis: Any
    # Set by our startup.
    resources: Resources
    exit_stack: AsyncExitStack
    worker_id: str
    webhook_client: WebhookClient
    # Chat calls in flight per provider, shared by every evaluation this process runs.
    provider_bounds: ProviderBounds
    # Steps every followed job when it is due (beside arq's tasks).
    follower: JobFollower
    # Sends the first attempt of the webhooks this process emits.
    local_sender: LocalSender
