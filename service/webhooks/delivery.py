"""Delivering a webhook: one signed POST attempt, recorded, and the next one scheduled.

- 2xx is success; anything else (3xx included: redirects are never followed)
  is a failure and schedules the next attempt on DELAYS with jitter, honouring
  a bounded Retry-After.
- An attempt has one deadline for everything (resolve, connect, send, read):
  a receiver that trickles its answer cannot hold a worker slot past it, and
  only the first RESPONSE_KEEP_BYTES of its answer are read.
- Each tenant has at most WEBHOOK_CONCURRENCY_PER_TENANT attempts in flight
  (slots in Redis, shared by every worker); an attempt that finds them taken
  waits its turn with a short deferral, so one tenant's slow receivers never
  fill the worker and delay another tenant's jobs or webhooks.
- 410 Gone disables the endpoint at once; an endpoint failing without a single
  success for DISABLE_AFTER_SECONDS is disabled and says why.
- The address dialled is checked at connect time (`service.webhooks.client`),
  so a DNS answer that changed since registration cannot reach a private network.
  A refused address, like a secret that cannot sign, is a failed attempt with
  its reason on record.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterable
from typing import Literal

from service import tasks
from service.domain import webhook_signing
from service.domain.records import Delivery, DeliveryAttempt, Endpoint, JobSecret
from service.domain.stamps import now_iso
from service.resources import Resources
from service.store.records import Op, RecordGone
from service.store.slots import Slots
from service.store.webhooks import AttemptStart, WebhookStore
from service.webhooks.client import Answer, SendFailed, WebhookClient
from service.webhooks.outbound_guard import UnsafeTarget

logger = logging.getLogger(__name__)

# Seconds before attempt 2, 3, …: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
DELAYS = (5, 300, 1800, 7200, 18000, 36000, 36000)
MAX_ATTEMPTS = len(DELAYS) + 1
TIMEOUT_SECONDS = 15.0
MAX_RETRY_AFTER = 3600.0
RESPONSE_KEEP_BYTES = 4096
DISABLE_AFTER_SECONDS = 5 * 24 * 3600
SECRET_OVERLAP_SECONDS = 24 * 3600
SLOT_WAIT_SECONDS = 1.0
# A slot outlives its attempt's deadline a little, for the bookkeeping after it.
SLOT_SPARE_SECONDS = 10.0


def delivery_client(*, allow_private: bool) -> WebhookClient:
    """The client a process sends its deliveries with (see `service.webhooks.client`)."""
    return WebhookClient(allow_private=allow_private, keep_bytes=RESPONSE_KEEP_BYTES)


def _retry_after(answer: Answer | None) -> float | None:
    value = answer.retry_after if answer is not None else None
    if value is None:
        return None
    try:
        return min(MAX_RETRY_AFTER, max(0.0, float(value)))
    except ValueError:
        return None


def next_delay(attempt: int, retry_after: float | None) -> float | None:
    """Delay before attempt `attempt + 1`, or None when attempts are used up."""
    if attempt >= MAX_ATTEMPTS:
        return None
    base = DELAYS[attempt - 1] * random.uniform(0.9, 1.1)  # noqa: S311 - jitter
    return max(base, retry_after) if retry_after is not None else base


def signing_secrets(
    resources: Resources, endpoint: Endpoint | None, record: JobSecret | None
) -> list[str]:
    """An endpoint's active secrets, or for a job's own webhook_url its tenant's
    (`record`; the service-wide one only serves the single local tenant of a dev
    machine)."""
    now = time.time()
    if endpoint is not None:
        return webhook_signing.active_secrets(endpoint.secrets, now)
    if record is not None:
        return webhook_signing.active_secrets(record.secrets, now)
    if resources.settings.auth_disabled:
        return [resources.settings.signing_secret]
    return []


class WebhookDelivery:
    def __init__(self, resources: Resources, client: WebhookClient) -> None:
        self.resources = resources
        self.store = resources.webhooks
        self.client = client

    async def attempt(
        self, delivery_id: str, attempt: int, tenant: str | None = None
    ) -> str | float:
        """One attempt; returns what happened, or the seconds to wait for a free slot.
        `tenant`: the delivery's, when the caller knows it (the process that stored the
        delivery): the delivery, a slot and the signing secret then take one round trip."""
        if tenant is None:
            found = await self.store.read_delivery(delivery_id)
            if found is None:
                return "gone"
            if _ran(found[0], attempt):
                return "stale"
            tenant = found[0].tenant
        slots = Slots(
            self.resources.redis,
            self.resources.keys.delivery_slots(tenant),
            limit=self.resources.settings.webhook_concurrency_per_tenant,
            ttl=TIMEOUT_SECONDS + SLOT_SPARE_SECONDS,
        )
        holder = f"{delivery_id}:{attempt}"
        start = await self.store.begin_attempt(
            delivery_id, tenant, holder, limit=slots.limit, ttl=slots.ttl
        )
        try:
            return await self._attempt(start, tenant, attempt, slots, holder)
        except BaseException:
            if start.slot:
                await slots.release(holder)  # a no-op if the attempt's write gave it back
            raise

    async def _attempt(
        self, start: AttemptStart, tenant: str, attempt: int, slots: Slots, holder: str
    ) -> str | float:
        delivery, raw = start.delivery, start.raw
        if delivery is None or raw is None or delivery.tenant != tenant:
            return await _give_back(slots, holder, start.slot, "gone")
        if _ran(delivery, attempt):
            return await _give_back(slots, holder, start.slot, "stale")
        if not start.slot:
            return SLOT_WAIT_SECONDS * random.uniform(0.5, 1.5)  # noqa: S311 - jitter
        endpoint = None
        if delivery.endpoint_id:
            endpoint = await self.store.endpoint(delivery.endpoint_id)
            if endpoint is None or not endpoint.enabled:
                reason = "endpoint deleted" if endpoint is None else "endpoint disabled"
                await _finish(
                    self.store,
                    delivery.id,
                    "failed",
                    error=reason,
                    read=raw,
                    ops=[slots.release_op(holder)],
                )
                return reason
        # The write that records the attempt gives the slot back too.
        return await self._send(
            delivery,
            raw,
            endpoint,
            attempt,
            slots.release_op(holder),
            signing_secrets(self.resources, endpoint, start.job_secret),
        )

    async def _send(
        self,
        delivery: Delivery,
        read: str,
        endpoint: Endpoint | None,
        attempt: int,
        release: Op,
        secrets: list[str],
    ) -> str:
        store = self.store
        delivery_id = delivery.id
        url = endpoint.url if endpoint else delivery.url
        body = delivery.payload.encode()
        started = time.perf_counter()
        answer: Answer | None = None
        error: str | None = None
        try:
            if not secrets:
                raise webhook_signing.SigningError(
                    "the tenant has no signing secret for jobs' webhook_url "
                    "(create one with POST /webhooks/job-secret)"
                )
            headers = webhook_signing.headers(secrets, delivery.event_id, int(time.time()), body)
            answer = await self.client.post(url, body, headers, deadline=TIMEOUT_SECONDS)
        except webhook_signing.SigningError as exc:
            error = f"not sent: {exc}"
        except UnsafeTarget as exc:
            error = f"not sent: {exc.detail}"
        except TimeoutError:
            error = f"no complete answer within {TIMEOUT_SECONDS:g} s"
        except SendFailed as exc:
            error = str(exc)
        latency_ms = round((time.perf_counter() - started) * 1000, 1)
        status = answer.status if answer is not None else None
        if status is not None and 300 <= status < 400:
            error = f"redirect ({status}) not followed"
        elif status is not None and not 200 <= status < 300:
            error = f"HTTP {status}"
        record = DeliveryAttempt(
            attempt=attempt,
            at=now_iso(),
            url=url,
            status=status,
            latency_ms=latency_ms,
            response=answer.body.decode("utf-8", "replace") if answer is not None else None,
            error=error,
        )
        succeeded = status is not None and 200 <= status < 300
        gone = status == 410 and endpoint is not None
        delay = None if succeeded or gone else next_delay(attempt, _retry_after(answer))
        # The attempt and the verdict it led to are one write: a reader never sees
        # an answered attempt on a delivery that still looks pending.
        if delay is None:
            verdict: Literal["succeeded", "failed"] = "succeeded" if succeeded else "failed"
            await _finish(
                store,
                delivery_id,
                verdict,
                status=status,
                error=error,
                record=record,
                read=read,
                ops=[release],
            )
        else:
            retry_at = time.time() + delay

            def schedule(d: Delivery) -> Delivery:
                d.attempt_count = attempt
                d.last_status = status
                d.last_error = error
                d.next_attempt_at = retry_at
                d.updated_at = now_iso()
                return d

            await store.update_delivery(
                delivery_id, schedule, attempt=record, read=read, ops=[release]
            )
        if endpoint is not None:
            try:
                if succeeded:
                    await store.update_endpoint(endpoint.id, _healthy)
                elif gone:
                    await store.update_endpoint(
                        endpoint.id, lambda e: _disable(e, "The endpoint answered 410 Gone")
                    )
                else:
                    await _note_failure(store, endpoint.id)
            except RecordGone:
                pass  # the endpoint was deleted meanwhile; the delivery has its verdict
        if delay is None:
            return "succeeded" if succeeded else "gone-410" if gone else "failed"
        await tasks.enqueue_delivery(
            self.resources.queue, delivery_id, attempt=attempt + 1, defer_by=delay
        )
        logger.info(
            "webhook attempt failed; retrying",
            extra={
                "delivery_id": delivery_id,
                "status": status,
                "error": error,
                "retry_in": round(delay, 1),
            },
        )
        return "retrying"

    async def requeue(self) -> int:
        """For the reconciler: every pending delivery has its next attempt queued."""
        queue = self.resources.queue
        scheduled = 0
        for delivery in await self.store.deliveries(await self.store.pending_ids()):
            if delivery.state != "pending":
                await self.store.update_delivery(delivery.id, lambda d: d)
                continue
            attempt = delivery.attempt_count + 1
            if await tasks.is_scheduled(queue, tasks.deliver_job_id(delivery.id, attempt)):
                continue
            due = float(delivery.next_attempt_at or 0)
            if attempt == 1:
                due = max(due, delivery.sending_until or 0.0)  # a worker may be sending it
            defer = max(0.0, due - time.time())
            if await tasks.enqueue_delivery(queue, delivery.id, attempt=attempt, defer_by=defer):
                scheduled += 1
        return scheduled


def _ran(delivery: Delivery, attempt: int) -> bool:
    """The attempt already ran (a duplicate enqueue), or the delivery was settled."""
    return delivery.state != "pending" or delivery.attempt_count >= attempt


async def _give_back(slots: Slots, holder: str, taken: bool, outcome: str) -> str:
    """An attempt that will not run: its slot, if it took one, is freed at once."""
    if taken:
        await slots.release(holder)
    return outcome


async def _note_failure(store: WebhookStore, endpoint_id: str) -> None:
    endpoint = await store.update_endpoint(endpoint_id, _failing)
    since = endpoint.failing_since or time.time()
    if time.time() - since > DISABLE_AFTER_SECONDS:
        await store.update_endpoint(
            endpoint_id, lambda e: _disable(e, "Every delivery failed for more than 5 days")
        )


async def _finish(
    store: WebhookStore,
    delivery_id: str,
    state: Literal["succeeded", "failed"],
    *,
    status: int | None = None,
    error: str | None = None,
    record: DeliveryAttempt | None = None,
    read: str | None = None,
    ops: Iterable[Op] = (),
) -> None:
    """Settle a delivery, with the attempt that settled it when there was one."""

    def change(d: Delivery) -> Delivery:
        d.state = state
        d.last_status = status
        d.last_error = error
        d.finished_at = now_iso()
        d.updated_at = now_iso()
        if record is not None:
            d.attempt_count = record.attempt
        return d

    await store.update_delivery(delivery_id, change, attempt=record, read=read, ops=ops)


def _healthy(endpoint: Endpoint) -> Endpoint | None:
    if endpoint.failing_since is None:
        return None
    endpoint.failing_since = None
    return endpoint


def _failing(endpoint: Endpoint) -> Endpoint | None:
    if endpoint.failing_since is not None:
        return None
    endpoint.failing_since = time.time()
    return endpoint


def _disable(endpoint: Endpoint, reason: str) -> Endpoint:
    endpoint.enabled = False
    endpoint.disabled_reason = reason
    endpoint.updated_at = now_iso()
    return endpoint
