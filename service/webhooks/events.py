"""Turning job and evaluation events into webhook deliveries.

A job's sync step builds the deliveries of what it announces
(`job_event_deliveries`), writes them in the same write as the job that
records the announcement, then has the new ones sent (`dispatch`);
`emit_job_event` and `emit_evaluation_event` store and dispatch at once. The
payload is built once per event (`{"id", "type", "timestamp", "data"}` with
`data` the job or the evaluation exactly as its GET shows it), with one
delivery per target — every enabled endpoint of the tenant subscribed to the
type, plus the job's own `webhook_url` for final states — sent by this
process at once where it sends first attempts itself (the worker; see
`service.webhooks.sending`), else through the queue. It is idempotent: the
event id and delivery ids derive from (job, type, target), so a sync step
that runs twice announces once.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True, slots=True)
class Event:
    """One thing to announce: its id, type and data (the job or evaluation as its GET
    shows it), whose it is, and a job's own webhook_url when that gets it too."""

    tenant: str
    id: str
    type: str
    data: dict[str, Any]
    job_id: str | None
    own_url: str | None = None


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


async def job_event_deliveries(
    resources: Resources,
    job: Job,
    event_type: str,
    endpoints: Sequence[Endpoint],
    *,
    discriminator: str = "",
) -> list[Delivery]:
    """The deliveries announcing one job event to `endpoints` (the tenant's) and the
    job's own webhook_url, built but not stored: a sync step writes them with the
    job (`service.store.jobs.Changes.creates`), then calls `dispatch`."""
    data = public_job(job, evaluation=await job_evaluation_of(resources, job))
    event = Event(
        tenant=job.tenant,
        id=event_id_for(job.id, event_type, discriminator),
        type=event_type,
        data=data.model_dump(mode="json"),
        job_id=job.id,
        own_url=job.webhook_url if event_type in FINAL_TYPES else None,
    )
    return event_deliveries(resources, event, endpoints)


async def emit_job_event(
    resources: Resources,
    job: Job,
    event_type: str,
    *,
    discriminator: str = "",
    endpoints: Sequence[Endpoint] | None = None,
) -> int:
    """Create and enqueue deliveries for one job event. Returns how many are new.
    `endpoints`: the tenant's, when the caller has just read them; else they are read."""
    if endpoints is None:
        endpoints = await resources.webhooks.tenant_endpoints(job.tenant)
    deliveries = await job_event_deliveries(
        resources, job, event_type, endpoints, discriminator=discriminator
    )
    return await _store_and_dispatch(resources, deliveries)


async def emit_evaluation_event(
    resources: Resources, evaluation: Evaluation, event_type: str
) -> int:
    """`evaluation.completed` / `evaluation.failed`, with the evaluation (and its summary)
    as data. An evaluation a job started also goes to that job's own webhook_url."""
    own_url = None
    if evaluation.job_id and evaluation.origin == "job":
        job = await resources.jobs.get(evaluation.job_id)
        own_url = job.webhook_url if job is not None else None
    event = Event(
        tenant=evaluation.tenant,
        id=event_id_for(evaluation.id, event_type),
        type=event_type,
        data=public_evaluation(evaluation).model_dump(mode="json"),
        job_id=evaluation.job_id,
        own_url=own_url,
    )
    return await emit_event(resources, event)


async def emit_event(
    resources: Resources, event: Event, endpoints: Sequence[Endpoint] | None = None
) -> int:
    """Store and have sent one delivery per target (see `event_deliveries`); returns
    how many are new. `endpoints`: the tenant's when the caller has just read them;
    else they are read."""
    if endpoints is None:
        endpoints = await resources.webhooks.tenant_endpoints(event.tenant)
    return await _store_and_dispatch(resources, event_deliveries(resources, event, endpoints))


async def _store_and_dispatch(resources: Resources, deliveries: Sequence[Delivery]) -> int:
    created = [await resources.webhooks.add_delivery(delivery) for delivery in deliveries]
    return await dispatch(resources, deliveries, created)


def event_deliveries(
    resources: Resources, event: Event, endpoints: Sequence[Endpoint]
) -> list[Delivery]:
    """One delivery per target: every enabled endpoint of the tenant subscribed to the
    type, plus the event's `own_url` (a job's webhook_url). Where this process sends
    first attempts itself and has room, each is marked to be sent here
    (`sending_until`)."""
    payload = dumps(
        {"id": event.id, "type": event.type, "timestamp": now_iso(), "data": event.data}
    )
    targets: list[tuple[str | None, str]] = [
        (endpoint.id, endpoint.url)
        for endpoint in endpoints
        if endpoint.enabled and event.type in endpoint.event_types
    ]
    if event.own_url:
        targets.append((None, event.own_url))
    sender = resources.local_sender
    return [
        new_delivery(
            delivery_id=delivery_id_for(event.id, endpoint_id or url),
            tenant=event.tenant,
            event_id=event.id,
            event_type=event.type,
            payload=payload,
            endpoint_id=endpoint_id,
            url=url,
            job_id=event.job_id,
            sending_until=(
                sender.window_end() if sender is not None and sender.has_room() else None
            ),
        )
        for endpoint_id, url in targets
    ]


async def dispatch(
    resources: Resources, deliveries: Sequence[Delivery], created: Sequence[bool]
) -> int:
    """Have stored deliveries sent: a new one by this process at once where it was
    marked so, else through the queue; one stored before (a step that ran again, or a
    crash between store and queue) through the queue after the window in which a
    worker may be sending it itself. Returns how many were new."""
    sender = resources.local_sender
    for delivery, new in zip(deliveries, created, strict=True):
        if not new:
            # Queueing is a no-op while its attempt is already queued.
            await tasks.enqueue_delivery(
                resources.queue, delivery.id, attempt=1, defer_by=SEND_WINDOW_SECONDS
            )
        elif sender is not None and delivery.sending_until is not None:
            sender.send(delivery.id, delivery.tenant, delivery.sending_until)
        else:
            # A final state is what receivers wait on: it goes ahead of anything
            # merely due (the priority lane).
            await tasks.enqueue_delivery(
                resources.queue,
                delivery.id,
                attempt=1,
                urgent=delivery.event_type in FINAL_TYPES,
            )
    by_event: dict[str, list[Delivery]] = {}
    for delivery in deliveries:
        by_event.setdefault(delivery.event_id, []).append(delivery)
    for group in by_event.values():
        logger.info(
            "event emitted",
            extra={
                "event_type": group[0].event_type,
                "job_id": group[0].job_id,
                "targets": len(group),
            },
        )
    return sum(created)
