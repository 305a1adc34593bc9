"""Webhook endpoints, deliveries and tenants' job webhook secrets in Redis.

- `fts:webhook:{id}`: an endpoint (url, event types, secrets, health).
- `fts:delivery:{id}`: one message to one target, with its state.
- `fts:delivery:{id}:attempts`: every attempt, oldest first.
- `fts:webhook:{id}:deliveries`: an endpoint's deliveries by creation time.
- `fts:deliveries:pending`: ids still to deliver (what the reconciler walks).
- `fts:tenant:{tenant}:job-webhook-secret`: the secrets jobs' `webhook_url`s are signed with.

Delivery ids are derived from (event, target), so emitting the same event
twice (a retried sync) finds the delivery it already made.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable

from redis.asyncio import Redis

from service.domain.records import Delivery, DeliveryAttempt, Endpoint, JobSecret
from service.errors import NotFound
from service.store.keys import Keys
from service.store.records import (
    Op,
    Page,
    RecordGone,
    WriteConflict,
    create_records,
    creation_score,
    delete_record,
    get_record,
    get_records,
    page_ids,
    parse,
    update_record,
)

MAX_ATTEMPTS_KEPT = 50


def delivery_id_for(event_key: str, target: str) -> str:
    digest = hashlib.blake2b(f"{event_key}|{target}".encode(), digest_size=15).hexdigest()
    return "whd_" + digest


class WebhookStore:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    # Endpoints
    async def create_endpoint(self, endpoint: Endpoint, *, max_per_tenant: int) -> None:
        """Store a new endpoint unless the tenant already has `max_per_tenant`
        (then LimitReached; checked and written atomically)."""
        index = self.keys.endpoints_by_tenant(endpoint.tenant)
        await create_records(
            self.redis,
            [(self.keys.endpoint(endpoint.id), endpoint)],
            [("ZADD", index, creation_score(), endpoint.id)],
            limits=[(index, max_per_tenant)],
        )

    async def endpoint(self, endpoint_id: str) -> Endpoint | None:
        return await get_record(self.redis, self.keys.endpoint(endpoint_id), Endpoint)

    async def endpoint_for_tenant(self, tenant: str, endpoint_id: str) -> Endpoint:
        found = await self.endpoint(endpoint_id)
        if found is None or found.tenant != tenant:
            raise NotFound(f"No webhook endpoint {endpoint_id} for this tenant")
        return found

    async def update_endpoint(
        self, endpoint_id: str, change: Callable[[Endpoint], Endpoint | None]
    ) -> Endpoint:
        return await update_record(self.redis, self.keys.endpoint(endpoint_id), Endpoint, change)

    async def delete_endpoint(self, endpoint: Endpoint) -> None:
        index = self.keys.endpoints_by_tenant(endpoint.tenant)
        try:
            await delete_record(
                self.redis,
                self.keys.endpoint(endpoint.id),
                Endpoint,
                ops=lambda e: [("ZREM", index, e.id)],
            )
        except RecordGone:
            raise NotFound(f"No webhook endpoint {endpoint.id} for this tenant") from None

    async def endpoint_page(self, tenant: str, *, limit: int, after: str | None) -> Page:
        return await page_ids(
            self.redis, self.keys.endpoints_by_tenant(tenant), limit=limit, after=after
        )

    async def endpoints(self, ids: Iterable[str]) -> list[Endpoint]:
        return await get_records(self.redis, [self.keys.endpoint(i) for i in ids], Endpoint)

    async def tenant_endpoints(self, tenant: str) -> list[Endpoint]:
        ids = await self.redis.zrange(self.keys.endpoints_by_tenant(tenant), 0, -1)
        return await self.endpoints(ids)

    # The tenant's secret for jobs' own webhook_url deliveries
    async def job_secret(self, tenant: str) -> JobSecret | None:
        return await get_record(self.redis, self.keys.tenant_job_webhook_secret(tenant), JobSecret)

    async def create_job_secret(self, record: JobSecret) -> None:
        """WriteConflict when the tenant already has one."""
        key = self.keys.tenant_job_webhook_secret(record.tenant)
        await create_records(self.redis, [(key, record)])

    async def update_job_secret(
        self, tenant: str, change: Callable[[JobSecret], JobSecret | None]
    ) -> JobSecret:
        """RecordGone when the tenant has none."""
        key = self.keys.tenant_job_webhook_secret(tenant)
        return await update_record(self.redis, key, JobSecret, change)

    # Deliveries
    async def add_delivery(self, delivery: Delivery) -> bool:
        """Store a new delivery with its indexes (one write); False if this
        (event, target) was already recorded."""
        ops: list[Op] = [("SADD", self.keys.pending_deliveries, delivery.id)]
        if delivery.endpoint_id:
            index = self.keys.deliveries_by_endpoint(delivery.endpoint_id)
            ops.append(("ZADD", index, creation_score(), delivery.id))
        try:
            await create_records(self.redis, [(self.keys.delivery(delivery.id), delivery)], ops)
        except WriteConflict:
            return False
        return True

    async def delivery(self, delivery_id: str) -> Delivery | None:
        return await get_record(self.redis, self.keys.delivery(delivery_id), Delivery)

    async def read_delivery(self, delivery_id: str) -> tuple[Delivery, str] | None:
        """A delivery with its raw JSON: the base of a later `update_delivery(read=…)`."""
        raw = await self.redis.get(self.keys.delivery(delivery_id))
        delivery = parse(Delivery, raw)
        return None if raw is None or delivery is None else (delivery, raw)

    async def delivery_for_tenant(self, tenant: str, delivery_id: str) -> Delivery:
        found = await self.delivery(delivery_id)
        if found is None or found.tenant != tenant:
            raise NotFound(f"No webhook delivery {delivery_id} for this tenant")
        return found

    async def update_delivery(
        self,
        delivery_id: str,
        change: Callable[[Delivery], Delivery | None],
        *,
        attempt: DeliveryAttempt | None = None,
        read: str | None = None,
        ops: Iterable[Op] = (),
    ) -> Delivery:
        """Change a delivery; `attempt`, when given, is appended to its attempts in
        the same commit, so nobody reads an attempt without the verdict it led to.
        `read`: the delivery as last read (see `update_record`); `ops`: more
        operations for the same commit (a slot given back, say)."""
        also = list(ops)
        attempts_key = self.keys.delivery_attempts(delivery_id)
        recorded = () if attempt is None else (attempt.model_dump_json(),)

        def index(delivery: Delivery) -> list[Op]:
            command = "SADD" if delivery.state == "pending" else "SREM"
            ops: list[Op] = [(command, self.keys.pending_deliveries, delivery_id)]
            for raw in recorded:
                ops.append(("RPUSH", attempts_key, raw))
                ops.append(("LTRIM", attempts_key, -MAX_ATTEMPTS_KEPT, -1))
            return ops + also

        def changed(delivery: Delivery) -> Delivery | None:
            # An attempt to record is a change even when the fields stay the same.
            updated = change(delivery)
            return delivery if updated is None and recorded else updated

        return await update_record(
            self.redis, self.keys.delivery(delivery_id), Delivery, changed, extra=index, read=read
        )

    async def delivery_with_attempts(
        self, tenant: str, delivery_id: str
    ) -> tuple[Delivery, list[DeliveryAttempt]]:
        """A tenant's delivery and its attempts as of one moment (one MULTI/EXEC)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.get(self.keys.delivery(delivery_id))
            pipe.lrange(self.keys.delivery_attempts(delivery_id), 0, -1)
            raw, raws = await pipe.execute()
        delivery = parse(Delivery, raw)
        if delivery is None or delivery.tenant != tenant:
            raise NotFound(f"No webhook delivery {delivery_id} for this tenant")
        return delivery, [DeliveryAttempt.model_validate_json(a) for a in raws]

    async def delivery_page(self, endpoint_id: str, *, limit: int, after: str | None) -> Page:
        return await page_ids(
            self.redis, self.keys.deliveries_by_endpoint(endpoint_id), limit=limit, after=after
        )

    async def deliveries(self, ids: Iterable[str]) -> list[Delivery]:
        return await get_records(self.redis, [self.keys.delivery(i) for i in ids], Delivery)

    async def pending_ids(self) -> set[str]:
        return set(await self.redis.smembers(self.keys.pending_deliveries))
