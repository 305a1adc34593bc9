"""Turning job events into webhook deliveries.

`emit_job_event` is called when a job reaches a state worth announcing. It
builds the payload once (`{"id", "type", "timestamp", "data"}` with `data`
the job exactly as `GET /jobs/{id}` shows it), creates one delivery per
target — every enabled endpoint of the tenant subscribed to the type, plus
the job's own `webhook_url` for final states — and enqueues them. It is
idempotent: the event id and delivery ids derive from (job, type, target),
so a sync step that runs twice announces once.
"""

from __future__ import annotations

import hashlib
import logging
import time

from service import tasks
from service.domain.records import Delivery, Job
from service.domain.stamps import now_iso
from service.jobs.view import public_job
from service.resources import Resources
from service.store.records import dumps
from service.store.webhooks import delivery_id_for

logger = logging.getLogger(__name__)

FINAL_TYPES = ("job.succeeded", "job.failed", "job.cancelled")
PROGRESS_TYPES = ("job.running", "job.checkpoint.created")
EVENT_TYPES = FINAL_TYPES + PROGRESS_TYPES
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
        created_at=now,
        updated_at=now,
    )


async def emit_job_event(
    resources: Resources, job: Job, event_type: str, *, discriminator: str = ""
) -> int:
    """Create and enqueue deliveries for one job event. Returns how many are new."""
    event_id = event_id_for(job.id, event_type, discriminator)
    payload = dumps(
        {
            "id": event_id,
            "type": event_type,
            "timestamp": now_iso(),
            "data": public_job(job).model_dump(mode="json"),
        }
    )
    store = resources.webhooks
    targets: list[tuple[str | None, str]] = [
        (endpoint.id, endpoint.url)
        for endpoint in await store.tenant_endpoints(job.tenant)
        if endpoint.enabled and event_type in endpoint.event_types
    ]
    if job.webhook_url and event_type in FINAL_TYPES:
        targets.append((None, job.webhook_url))
    created = 0
    for endpoint_id, url in targets:
        delivery = new_delivery(
            delivery_id=delivery_id_for(event_id, endpoint_id or url),
            tenant=job.tenant,
            event_id=event_id,
            event_type=event_type,
            payload=payload,
            endpoint_id=endpoint_id,
            url=url,
            job_id=job.id,
        )
        if await store.add_delivery(delivery):
            created += 1
        # Enqueue even if it existed: a crash may have come between store and enqueue.
        # A final state is what receivers wait on: it goes ahead of polls (priority lane).
        await tasks.enqueue_delivery(
            resources.queue, delivery.id, attempt=1, urgent=event_type in FINAL_TYPES
        )
    if targets:
        logger.info(
            "job event emitted",
            extra={"job_id": job.id, "event_type": event_type, "targets": len(targets)},
        )
    return created
