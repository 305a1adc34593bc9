"""Turning job and evaluation events into webhook deliveries.

`emit_job_event` is called when a job reaches a state worth announcing,
`emit_evaluation_event` when an evaluation finishes. Each builds the payload
once (`{"id", "type", "timestamp", "data"}` with `data` the job or the
evaluation exactly as its GET shows it), creates one delivery per
target — every enabled endpoint of the tenant subscribed to the type, plus
the job's own `webhook_url` for final states — and has them sent: by this
process at once where it sends first attempts itself (the worker; see
`service.webhooks.sending`), else through the queue. It is
idempotent: the event id and delivery ids derive from (job, type, target),
so a sync step that runs twice announces once.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from typing import Any

from service import tasks
from service.domain.records import Delivery, Endpoint, Evaluation, Job
from service.domain.stamps import now_iso
from service.evaluations.automatic import job_evaluation_of
from service.evaluations.view import public_evaluation
from service.jobs.view import public_job
from service.resources import Resources
from service.store.records import dumps
from service.store.webhooks import delivery_id_for
from service.webhooks.sending import SEND_WINDOW_SECONDS

logger = logging.getLogger(__name__)

FINAL_TYPES = ("job.succeeded", "job.failed", "job.cancelled")
PROGRESS_TYPES = ("job.running", "job.checkpoint.created")
EVALUATION_TYPES = ("evaluation.completed", "evaluation.failed")
EVENT_TYPES = FINAL_TYPES + PROGRESS_TYPES + EVALUATION_TYPES
PING_TYPE = "webhook.ping"
# An endpoint created without event types gets the final ones.
DEFAULT_EVENT_TYPES = FINAL_TYPES


def event_id_for(job_id: str, event_type: str, discriminator: str = "") -> str:
    digest = hashlib.blake2b(f"{job_id}|{event_type}|{discriminator}".encode(), digest_size=15)
    return "evt_" + digest.hexdigest()


def new_delivery(
    *,
    delivery_id: str,
    tenant: str,
    event_id: str,
    event_type: str,
    payload: str,
    endpoint_id: str | None,
    url: str,
    job_id: str | None,
    sending_until: float | None = None,
) -> Delivery:
    now = now_iso()
    return Delivery(
        id=delivery_id,
        tenant=tenant,
        endpoint_id=endpoint_id,
        url=url,
        job_id=job_id,
        event_id=event_id,
        event_type=event_type,
        payload=payload,
        next_attempt_at=time.time(),
        sending_until=sending_until,
        created_at=now,
        updated_at=now,
    )


async def emit_job_event(
    resources: Resources,
    job: Job,
    event_type: str,
    *,
    discriminator: str = "",
    endpoints: Sequence[Endpoint] | None = None,
) -> int:
    """Create and enqueue deliveries for one job event. Returns how many are new.
    `endpoints`: as for emit_event."""
    data = public_job(job, evaluation=await job_evaluation_of(resources, job))
    return await emit_event(
        resources,
        tenant=job.tenant,
        event_id=event_id_for(job.id, event_type, discriminator),
        event_type=event_type,
        data=data.model_dump(mode="json"),
        job_id=job.id,
        own_url=job.webhook_url if event_type in FINAL_TYPES else None,
        endpoints=endpoints,
    )


async def emit_evaluation_event(
    resources: Resources, evaluation: Evaluation, event_type: str
) -> int:
    """`evaluation.completed` / `evaluation.failed`, with the evaluation (and its summary)
    as data. An evaluation a job started also goes to that job's own webhook_url."""
    own_url = None
    if evaluation.job_id and evaluation.origin == "job":
        job = await resources.jobs.get(evaluation.job_id)
        own_url = job.webhook_url if job is not None else None
    return await emit_event(
        resources,
        tenant=evaluation.tenant,
        event_id=event_id_for(evaluation.id, event_type),
        event_type=event_type,
        data=public_evaluation(evaluation).model_dump(mode="json"),
        job_id=evaluation.job_id,
        own_url=own_url,
    )


async def emit_event(
    resources: Resources,
    *,
    tenant: str,
    event_id: str,
    event_type: str,
    data: dict[str, Any],
    job_id: str | None,
    own_url: str | None,
    endpoints: Sequence[Endpoint] | None = None,
) -> int:
    """One delivery per target (every enabled endpoint of the tenant subscribed to the
    type, plus `own_url`: a job's webhook_url), each stored then enqueued.
    `endpoints`: the tenant's endpoints when the caller has just read them (a job's
    sync step that announces several events reads them once); else they are read."""
    payload = dumps({"id": event_id, "type": event_type, "timestamp": now_iso(), "data": data})
    store = resources.webhooks
    if endpoints is None:
        endpoints = await store.tenant_endpoints(tenant)
    targets: list[tuple[str | None, str]] = [
        (endpoint.id, endpoint.url)
        for endpoint in endpoints
        if endpoint.enabled and event_type in endpoint.event_types
    ]
    if own_url:
        targets.append((None, own_url))
    created = 0
    sender = resources.local_sender
    for endpoint_id, url in targets:
        window_end = sender.window_end() if sender is not None and sender.has_room() else None
        delivery = new_delivery(
            delivery_id=delivery_id_for(event_id, endpoint_id or url),
            tenant=tenant,
            event_id=event_id,
            event_type=event_type,
            payload=payload,
            endpoint_id=endpoint_id,
            url=url,
            job_id=job_id,
            sending_until=window_end,
        )
        if await store.add_delivery(delivery):
            created += 1
            if sender is not None and window_end is not None:
                sender.send(delivery.id, tenant, window_end)  # sent from here, not queued
                continue
            # A final state is what receivers wait on: it goes ahead of anything
            # merely due (the priority lane).
            await tasks.enqueue_delivery(
                resources.queue, delivery.id, attempt=1, urgent=event_type in FINAL_TYPES
            )
        else:
            # Stored before (a step that ran again, or a crash between store and
            # queue): queue it, after the window in which a worker may be sending
            # it itself. Queueing is a no-op while its attempt is already queued.
            await tasks.enqueue_delivery(
                resources.queue, delivery.id, attempt=1, defer_by=SEND_WINDOW_SECONDS
            )
    if targets:
        logger.info(
            "event emitted",
            extra={"event_type": event_type, "job_id": job_id, "targets": len(targets)},
        )
    return created
