"""Webhook endpoints, their signing secrets, test pings and re-sends; the
tenant's own secret for its jobs' `webhook_url`; and providers' webhooks in.

A secret is shown once, in the answer that made it (an idempotent replay of
that answer leaves it out); rotation keeps the old secret signing beside the
new one for ROTATION_OVERLAP_SECONDS so receivers can switch without a gap.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

from service import tasks
from service.domain.records import Delivery, Endpoint, JobSecret, SigningSecret
from service.domain.stamps import new_id, now_iso
from service.domain.webhook_signing import new_secret, rotated
from service.errors import Conflict, MalformedRequest, NotFound, Unavailable
from service.providers.base import ProviderWebhookRejected
from service.resources import Resources
from service.store.records import LimitReached, RecordGone, WriteConflict, dumps
from service.webhooks.events import PING_TYPE, new_delivery
from service.webhooks.outbound_guard import check_webhook_url

logger = logging.getLogger(__name__)

ROTATION_OVERLAP_SECONDS = 24 * 3600


@dataclass(frozen=True, slots=True)
class EndpointChanges:
    url: str | None = None
    event_types: list[str] | None = None
    description: str | None = None
    enabled: bool | None = None


async def create_endpoint(
    resources: Resources, tenant: str, url: str, event_types: list[str], description: str
) -> tuple[Endpoint, str]:
    """The new endpoint and its secret (to show once)."""
    settings = resources.settings
    checked = await check_webhook_url(url, allow_private=settings.webhook_allow_private_networks)
    now = now_iso()
    secret = new_secret()
    endpoint = Endpoint(
        id=new_id("whe"),
        tenant=tenant,
        url=checked,
        event_types=sorted(set(event_types)),
        description=description,
        secrets=[SigningSecret(secret=secret, created_at=time.time())],
        created_at=now,
        updated_at=now,
    )
    try:
        await resources.webhooks.create_endpoint(
            endpoint, max_per_tenant=settings.webhook_max_endpoints_per_tenant
        )
    except LimitReached:
        raise Conflict(
            f"This tenant already has {settings.webhook_max_endpoints_per_tenant} webhook "
            "endpoints; delete one first",
            code="too_many_endpoints",
        ) from None
    return endpoint, secret


async def update_endpoint(
    resources: Resources, tenant: str, endpoint_id: str, changes: EndpointChanges
) -> Endpoint:
    store = resources.webhooks
    await store.endpoint_for_tenant(tenant, endpoint_id)
    url = None
    if changes.url is not None:
        url = await check_webhook_url(
            changes.url, allow_private=resources.settings.webhook_allow_private_networks
        )

    def change(endpoint: Endpoint) -> Endpoint:
        if url is not None:
            endpoint.url = url
        if changes.event_types is not None:
            endpoint.event_types = sorted(set(changes.event_types))
        if changes.description is not None:
            endpoint.description = changes.description
        if changes.enabled is not None:
            endpoint.enabled = changes.enabled
            if changes.enabled:
                endpoint.disabled_reason = None
                endpoint.failing_since = None
            else:
                endpoint.disabled_reason = "Disabled by the caller"
        endpoint.updated_at = now_iso()
        return endpoint

    return await store.update_endpoint(endpoint_id, change)


async def rotate_endpoint_secret(
    resources: Resources, tenant: str, endpoint_id: str
) -> tuple[Endpoint, str]:
    store = resources.webhooks
    await store.endpoint_for_tenant(tenant, endpoint_id)
    secret = new_secret()
    now = time.time()

    def rotate(endpoint: Endpoint) -> Endpoint:
        endpoint.secrets = rotated(endpoint.secrets, secret, now, ROTATION_OVERLAP_SECONDS)
        endpoint.updated_at = now_iso()
        return endpoint

    return await store.update_endpoint(endpoint_id, rotate), secret


async def delete_endpoint(resources: Resources, tenant: str, endpoint_id: str) -> None:
    store = resources.webhooks
    await store.delete_endpoint(await store.endpoint_for_tenant(tenant, endpoint_id))


async def send_test(resources: Resources, tenant: str, endpoint_id: str) -> Delivery:
    store = resources.webhooks
    endpoint = await store.endpoint_for_tenant(tenant, endpoint_id)
    if not endpoint.enabled:
        raise Conflict(f"The endpoint is disabled: {endpoint.disabled_reason}")
    event_id = new_id("evt")
    payload = dumps(
        {
            "id": event_id,
            "type": PING_TYPE,
            "timestamp": now_iso(),
            "data": {"endpoint_id": endpoint_id},
        }
    )
    delivery = new_delivery(
        delivery_id=new_id("whd"),
        tenant=tenant,
        event_id=event_id,
        event_type=PING_TYPE,
        payload=payload,
        endpoint_id=endpoint_id,
        url=endpoint.url,
        job_id=None,
    )
    await store.add_delivery(delivery)
    await tasks.enqueue_delivery(resources.queue, delivery.id, attempt=1)
    return delivery


async def retry_delivery(resources: Resources, tenant: str, delivery_id: str) -> Delivery:
    store = resources.webhooks
    delivery = await store.delivery_for_tenant(tenant, delivery_id)
    if delivery.state == "pending":
        raise Conflict("The delivery is still pending; it will be attempted on schedule")
    if delivery.endpoint_id:
        endpoint = await store.endpoint(delivery.endpoint_id)
        if endpoint is None or not endpoint.enabled:
            raise Conflict("The endpoint is deleted or disabled; enable it first")
    attempts_so_far = delivery.attempt_count

    def reopen(d: Delivery) -> Delivery:
        d.state = "pending"
        d.next_attempt_at = time.time()
        d.finished_at = None
        d.updated_at = now_iso()
        return d

    delivery = await store.update_delivery(delivery_id, reopen)
    await tasks.enqueue_delivery(resources.queue, delivery_id, attempt=attempts_so_far + 1)
    return delivery


# The tenant's secret for jobs' own webhook_url ---------------------------------


async def create_job_secret(resources: Resources, tenant: str) -> tuple[JobSecret, str]:
    secret = new_secret()
    record = JobSecret(
        id=f"jobsecret:{tenant}",
        tenant=tenant,
        secrets=[SigningSecret(secret=secret, created_at=time.time())],
        created_at=now_iso(),
    )
    try:
        await resources.webhooks.create_job_secret(record)
    except WriteConflict:
        raise Conflict(
            "This tenant already has a job webhook secret; rotate it to get a new one",
            code="job_secret_exists",
        ) from None
    return record, secret


async def job_secret(resources: Resources, tenant: str) -> JobSecret:
    record = await resources.webhooks.job_secret(tenant)
    if record is None:
        raise NotFound("This tenant has no job webhook secret; create one first")
    return record


async def rotate_job_secret(resources: Resources, tenant: str) -> tuple[JobSecret, str]:
    secret = new_secret()
    now = time.time()

    def rotate(record: JobSecret) -> JobSecret:
        record.secrets = rotated(record.secrets, secret, now, ROTATION_OVERLAP_SECONDS)
        record.rotated_at = now_iso()
        return record

    try:
        record = await resources.webhooks.update_job_secret(tenant, rotate)
    except RecordGone:
        raise NotFound("This tenant has no job webhook secret; create one first") from None
    return record, secret


# Providers' own webhooks in ---------------------------------------------------


async def receive_provider_webhook(
    resources: Resources, provider_name: str, body: bytes, headers: Mapping[str, str]
) -> str:
    """Verify a provider's signed webhook and pull the job's sync forward.

    Only a hint: the worker re-reads the job from the provider rather than
    trusting the event's content. Returns what was done.
    """
    if provider_name not in resources.providers.providers:
        raise NotFound(f"No provider {provider_name!r} is configured here")
    provider = resources.providers.get(provider_name)
    if not provider.capabilities.webhooks:
        raise Unavailable(
            f"Webhooks from provider {provider_name} are not configured (no webhook secret)",
            code="webhooks_not_configured",
        )
    try:
        upstream_id = provider.verify_webhook(body, headers)
    except ProviderWebhookRejected as exc:
        raise MalformedRequest(str(exc), code=exc.code) from None
    if upstream_id is None:
        return "ignored"
    job_id = await tasks.sync_upstream_job_now(resources.following, provider_name, upstream_id)
    if job_id is None:
        logger.info("webhook for an unknown upstream job", extra={"upstream_job": upstream_id})
        return "unknown_job"
    return "sync_scheduled"
