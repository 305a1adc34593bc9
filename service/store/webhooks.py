"""Webhook endpoints, deliveries and tenants' job webhook secrets in Redis.

- `fts:webhook:{id}`: an endpoint (url, event types, secrets, health).
- `fts:delivery:{id}`: one message to one target, with its state.
- `fts:delivery:{id}:attempts`: every attempt, oldest first.
- `fts:webhook:{id}:deliveries`: an endpoint's deliveries by creation time.
- `fts:deliveries:pending`: ids still to deliver (what the reconciler walks).
- `fts:tenant:{tenant}:job-webhook-secret`: the secrets jobs' `webhook_url`s are signed with.
- `fts:tenant:{tenant}:webhooks:version`: raised by every change to the tenant's
  endpoints. A process keeps the endpoints it last read per tenant
  (`current_endpoints`); a job's write that announces an event with them checks
  the counter (a `Guard`), so a copy that went stale is caught and read again.

Delivery ids are derived from (event, target), so emitting the same event
twice (a retried sync) finds the delivery it already made.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from redis.asyncio import Redis

from service.domain.records import Delivery, DeliveryAttempt, Endpoint, JobSecret
from service.errors import NotFound
from service.store.keys import Keys
from service.store.records import (
    Creation,
    Guard,
    Lookup,
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
    serialize,
    update_record,
)
from service.store.slots import TAKE_SLOT_LUA

MAX_ATTEMPTS_KEPT = 50
# Tenants whose endpoints a process keeps (the least recently used go first).
ENDPOINT_COPIES = 1024

# KEYS: the delivery, its tenant's delivery slots, its tenant's job webhook secret.
# ARGV: slot holder, slot limit, slot ttl. Returns {delivery or nil, 1 if the
# holder has a slot, the secret or nil}; no slot is taken for a missing delivery.
_BEGIN_ATTEMPT = (
    TAKE_SLOT_LUA
    + """
local raw = redis.call('GET', KEYS[1])
if not raw then return {false, 0, false} end
return {raw, take_slot(KEYS[2], ARGV[1], ARGV[2], ARGV[3]), redis.call('GET', KEYS[3])}
"""
)


@dataclass(frozen=True, slots=True)
class AttemptStart:
    """What a delivery attempt starts from, read in one round trip: the delivery (and
    its raw JSON, the base of the attempt's write), whether the holder got one of the
    tenant's slots, and the tenant's job webhook secret."""

    delivery: Delivery | None
    raw: str | None
    slot: bool
    job_secret: JobSecret | None


@dataclass(frozen=True, slots=True)
class TenantEndpoints:
    """A tenant's endpoints as read, and the guard that says they are still current."""

    endpoints: list[Endpoint]
    guard: Guard


def _targeting(endpoint: Endpoint) -> tuple[object, ...]:
    """The fields of an endpoint that decide which events it is sent, and where."""
    return (endpoint.url, endpoint.enabled, tuple(endpoint.event_types))


def delivery_id_for(event_key: str, target: str) -> str:
    digest = hashlib.blake2b(f"{event_key}|{target}".encode(), digest_size=15).hexdigest()
    return "whd_" + digest


class WebhookStore:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._copies: OrderedDict[str, TenantEndpoints] = OrderedDict()
        self._begin_attempt = redis.register_script(_BEGIN_ATTEMPT)

    # Endpoints
    async def create_endpoint(self, endpoint: Endpoint, *, max_per_tenant: int) -> None:
        """Store a new endpoint unless the tenant already has `max_per_tenant`
        (then LimitReached; checked and written atomically)."""
        index = self.keys.endpoints_by_tenant(endpoint.tenant)
        await create_records(
            self.redis,
            [(self.keys.endpoint(endpoint.id), endpoint)],
            [
                ("ZADD", index, creation_score(), endpoint.id),
                ("INCR", self.keys.endpoints_version(endpoint.tenant)),
            ],
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
        # Only what announcing an event reads (its targets) raises the tenant's
        # counter; a health note or a rotated secret leaves processes' copies valid.
        before: list[tuple[object, ...]] = []

        def noted(endpoint: Endpoint) -> Endpoint | None:
            before[:] = [_targeting(endpoint)]
            return change(endpoint)

        def extra(endpoint: Endpoint) -> list[Op]:
            if [_targeting(endpoint)] == before:
                return []
            return [("INCR", self.keys.endpoints_version(endpoint.tenant))]

        return await update_record(
            self.redis, self.keys.endpoint(endpoint_id), Endpoint, noted, extra=extra
        )

    async def delete_endpoint(self, endpoint: Endpoint) -> None:
        index = self.keys.endpoints_by_tenant(endpoint.tenant)
        try:
            await delete_record(
                self.redis,
                self.keys.endpoint(endpoint.id),
                Endpoint,
                ops=lambda e: [
                    ("ZREM", index, e.id),
                    ("INCR", self.keys.endpoints_version(e.tenant)),
                ],
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
        return (await self.read_endpoints(tenant)).endpoints

    async def read_endpoints(self, tenant: str) -> TenantEndpoints:
        """The tenant's endpoints now (one round trip when it has none, else two), kept
        as this process's copy."""
        version_key = self.keys.endpoints_version(tenant)
        # The counter is read first: a change landing between the reads leaves an
        # older counter beside newer endpoints, which a guard refuses (never the
        # other way round).
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.get(version_key)
            pipe.zrange(self.keys.endpoints_by_tenant(tenant), 0, -1)
            version, ids = await pipe.execute()
        found = TenantEndpoints(await self.endpoints(ids), Guard(version_key, version or "0"))
        self._copies[tenant] = found
        self._copies.move_to_end(tenant)
        while len(self._copies) > ENDPOINT_COPIES:
            self._copies.popitem(last=False)
        return found

    async def current_endpoints(self, tenant: str) -> TenantEndpoints:
        """This process's copy of the tenant's endpoints, read if it has none. It may be
        stale: a write that relies on it carries its guard, and on `guard_moved` the
        writer calls `forget_endpoints` and tries again."""
        found = self._copies.get(tenant)
        if found is None:
            return await self.read_endpoints(tenant)
        self._copies.move_to_end(tenant)
        return found

    def forget_endpoints(self, tenant: str) -> None:
        self._copies.pop(tenant, None)

    # The tenant's secret for jobs' own webhook_url deliveries
    async def job_secret(self, tenant: str) -> JobSecret | None:
        return await get_record(self.redis, self.keys.tenant_job_webhook_secret(tenant), JobSecret)

    def job_secret_lookup(self, tenant: str) -> Lookup[JobSecret]:
        """The tenant's job webhook secret, to read with other records."""
        return Lookup(self.keys.tenant_job_webhook_secret(tenant), JobSecret)

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
    def delivery_creation(self, delivery: Delivery) -> Creation:
        """A new delivery with its indexes, for a write that creates it where it is new."""
        ops: list[Op] = [("SADD", self.keys.pending_deliveries, delivery.id)]
        if delivery.endpoint_id:
            index = self.keys.deliveries_by_endpoint(delivery.endpoint_id)
            ops.append(("ZADD", index, creation_score(), delivery.id))
        return Creation(self.keys.delivery(delivery.id), serialize(delivery), tuple(ops))

    async def add_delivery(self, delivery: Delivery) -> bool:
        """Store a new delivery with its indexes (one write); False if this
        (event, target) was already recorded."""
        creation = self.delivery_creation(delivery)
        try:
            await create_records(self.redis, [(creation.key, delivery)], creation.ops)
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

    async def begin_attempt(
        self, delivery_id: str, tenant: str, holder: str, *, limit: int, ttl: float
    ) -> AttemptStart:
        """Read the delivery, take one of `tenant`'s delivery slots for `holder` and read
        the tenant's job webhook secret, at once. A slot taken for a delivery that turns
        out not to be due is the caller's to give back."""
        raw, slot, secret = await self._begin_attempt(
            keys=[
                self.keys.delivery(delivery_id),
                self.keys.delivery_slots(tenant),
                self.keys.tenant_job_webhook_secret(tenant),
            ],
            args=[holder, limit, ttl],
        )
        return AttemptStart(parse(Delivery, raw), raw, bool(int(slot)), parse(JobSecret, secret))

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
