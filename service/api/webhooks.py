"""`/webhooks`: endpoints that receive signed job events, their deliveries, and
`POST /webhooks/openai` where OpenAI's own webhooks come in."""

from __future__ import annotations

import logging
import time
from typing import Annotated, Any, Literal

import openai
from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.datastructures import State
from litestar.params import FromPath, FromQuery, QueryParameter
from litestar.status_codes import HTTP_201_CREATED, HTTP_202_ACCEPTED, HTTP_204_NO_CONTENT
from pydantic import BaseModel, ConfigDict, Field

from service import tasks
from service.api.auth import Tenant
from service.api.links import location
from service.api.openapi_docs import OpenAIWebhookOperation, example_body
from service.api.pagination import MAX_LIMIT, ListResponse, walk_newest_first
from service.api.problems import problems
from service.domain.webhook_signing import new_secret, rotated
from service.errors import Conflict, MalformedRequest, NotFound, Unavailable
from service.idempotency import Outcome, fingerprint, run_once
from service.notifications import PING_TYPE, new_delivery
from service.outbound_guard import check_webhook_url
from service.resources import Resources
from service.store.jobs import JobStore
from service.store.records import (
    LimitReached,
    RecordGone,
    WriteConflict,
    dumps,
    iso_from_unix,
    new_id,
    now_iso,
)
from service.store.webhooks import WebhookStore

logger = logging.getLogger(__name__)

EventType = Literal[
    "job.succeeded", "job.failed", "job.cancelled", "job.running", "job.checkpoint.created"
]
ROTATION_OVERLAP_SECONDS = 24 * 3600
DeliveryState = Literal["pending", "succeeded", "failed"]


def _final_types() -> list[EventType]:
    return ["job.succeeded", "job.failed", "job.cancelled"]


class EndpointCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "url": "https://example.com/hooks/fine-tuning",
                    "event_types": ["job.succeeded", "job.failed"],
                    "description": "Notify the chatbot team",
                }
            ]
        },
    )

    url: str = Field(min_length=8, max_length=2048)
    event_types: list[EventType] = Field(default_factory=_final_types, min_length=1)
    description: str = Field(default="", max_length=500)


class EndpointUpdate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"enabled": False}, {"event_types": ["job.succeeded"]}]},
    )

    url: str | None = Field(default=None, min_length=8, max_length=2048)
    event_types: list[EventType] | None = Field(default=None, min_length=1)
    description: str | None = Field(default=None, max_length=500)
    enabled: bool | None = None


class Endpoint(BaseModel):
    id: str
    object: Literal["webhook.endpoint"] = "webhook.endpoint"
    url: str
    event_types: list[str]
    description: str
    enabled: bool
    disabled_reason: str | None
    failing_since: float | None
    created_at: str
    updated_at: str


class EndpointWithSecret(Endpoint):
    secret: str | None = Field(
        description="Shown once: keep it to verify signatures. Null when an "
        "Idempotency-Key replays the creation (the secret is never stored for replays)."
    )


class JobWebhookSecret(BaseModel):
    """The tenant's secret for jobs' own `webhook_url` deliveries (not endpoints')."""

    object: Literal["webhook.job_secret"] = "webhook.job_secret"
    created_at: str
    rotated_at: str | None
    previous_expires_at: str | None = Field(
        description="Until then the previous secret signs too (a second v1 signature)"
    )


class JobWebhookSecretShown(JobWebhookSecret):
    secret: str = Field(description="Shown once: verify job webhook_url deliveries with it")


class Attempt(BaseModel):
    attempt: int
    at: str
    url: str
    status: int | None
    latency_ms: float
    response: str | None
    error: str | None


class Delivery(BaseModel):
    id: str
    object: Literal["webhook.delivery"] = "webhook.delivery"
    endpoint_id: str | None
    url: str
    job_id: str | None
    event_id: str
    event_type: str
    state: DeliveryState
    attempt_count: int
    next_attempt_at: float | None
    last_status: int | None
    last_error: str | None
    created_at: str
    finished_at: str | None


class DeliveryWithAttempts(Delivery):
    attempts: list[Attempt]


class Accepted(BaseModel):
    status: str


def _job_secret_view(record: dict[str, Any]) -> JobWebhookSecret:
    overlaps = [e["expires_at"] for e in record["secrets"] if e.get("expires_at") is not None]
    return JobWebhookSecret(
        created_at=record["created_at"],
        rotated_at=record.get("rotated_at"),
        previous_expires_at=iso_from_unix(max(overlaps)) if overlaps else None,
    )


def public_endpoint(record: dict[str, Any]) -> Endpoint:
    return Endpoint(**{k: record.get(k) for k in Endpoint.model_fields if k != "object"})


def public_delivery(record: dict[str, Any]) -> Delivery:
    values = {k: record.get(k) for k in Delivery.model_fields if k != "object"}
    if record["state"] != "pending":
        values["next_attempt_at"] = None
    return Delivery(**values)


class WebhookController(Controller):
    path = "/webhooks"
    tags = ["Webhooks"]

    @post(
        "/",
        operation_id="CreateWebhookEndpoint",
        summary="Register an endpoint; the answer shows its signing secret once",
        status_code=HTTP_201_CREATED,
        responses=problems(400, 401, 413, 422, 429),
    )
    async def create_endpoint(
        self,
        request: Request[Any, Any, Any],
        state: State,
        tenant: Tenant,
        data: Annotated[EndpointCreate, example_body(EndpointCreate)],
    ) -> Response[EndpointWithSecret]:
        resources: Resources = state.resources

        async def produce() -> Outcome:
            return await self._create(request, resources, tenant, data)

        return await run_once(
            request, resources, tenant, fingerprint(data.model_dump_json()), produce
        )

    async def _create(
        self,
        request: Request[Any, Any, Any],
        resources: Resources,
        tenant: str,
        data: EndpointCreate,
    ) -> Outcome:
        settings = resources.settings
        url = await check_webhook_url(
            data.url, allow_private=settings.webhook_allow_private_networks
        )
        now = now_iso()
        secret = new_secret()
        record = {
            "id": new_id("whe"),
            "tenant": tenant,
            "url": url,
            "event_types": sorted(set(data.event_types)),
            "description": data.description,
            "enabled": True,
            "disabled_reason": None,
            "failing_since": None,
            "secrets": [{"secret": secret, "created_at": time.time(), "expires_at": None}],
            "created_at": now,
            "updated_at": now,
        }
        try:
            await WebhookStore(resources.redis, resources.keys).create_endpoint(
                record, max_per_tenant=settings.webhook_max_endpoints_per_tenant
            )
        except LimitReached:
            raise Conflict(
                f"This tenant already has {settings.webhook_max_endpoints_per_tenant} webhook "
                "endpoints; delete one first",
                code="too_many_endpoints",
            ) from None
        body = EndpointWithSecret(**public_endpoint(record).model_dump(), secret=secret)
        shown = body.model_dump(mode="json")
        return Outcome(
            HTTP_201_CREATED,
            shown,
            {"Location": location(request, f"/webhooks/{record['id']}")},
            # A replay must not hand the secret out again, so it is never kept for one.
            replay_body={**shown, "secret": None},
        )

    @get(
        "/",
        operation_id="ListWebhookEndpoints",
        summary="List endpoints",
        responses=problems(400, 401, 429),
    )
    async def list_endpoints(
        self,
        state: State,
        tenant: Tenant,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT)] = 20,
        after: FromQuery[str | None] = None,
    ) -> ListResponse[Endpoint]:
        resources: Resources = state.resources
        store = WebhookStore(resources.redis, resources.keys)
        page = await store.endpoint_page(tenant, limit=limit, after=after)
        found = await store.endpoints(page.ids)
        return ListResponse(data=[public_endpoint(e) for e in found], has_more=page.has_more)

    @get(
        "/{endpoint_id:str}",
        operation_id="GetWebhookEndpoint",
        summary="One endpoint",
        responses=problems(400, 401, 404, 429),
    )
    async def get_endpoint(
        self, state: State, tenant: Tenant, endpoint_id: FromPath[str]
    ) -> Endpoint:
        resources: Resources = state.resources
        store = WebhookStore(resources.redis, resources.keys)
        return public_endpoint(await store.endpoint_for_tenant(tenant, endpoint_id))

    @patch(
        "/{endpoint_id:str}",
        operation_id="UpdateWebhookEndpoint",
        summary="Change url, event types, description, or enable/disable",
        responses=problems(400, 401, 404, 413, 422, 429),
    )
    async def update_endpoint(
        self,
        state: State,
        tenant: Tenant,
        endpoint_id: FromPath[str],
        data: Annotated[EndpointUpdate, example_body(EndpointUpdate)],
    ) -> Endpoint:
        resources: Resources = state.resources
        store = WebhookStore(resources.redis, resources.keys)
        await store.endpoint_for_tenant(tenant, endpoint_id)
        url = None
        if data.url is not None:
            url = await check_webhook_url(
                data.url, allow_private=resources.settings.webhook_allow_private_networks
            )

        def change(endpoint: dict[str, Any]) -> dict[str, Any]:
            if url is not None:
                endpoint["url"] = url
            if data.event_types is not None:
                endpoint["event_types"] = sorted(set(data.event_types))
            if data.description is not None:
                endpoint["description"] = data.description
            if data.enabled is not None:
                endpoint["enabled"] = data.enabled
                if data.enabled:
                    endpoint["disabled_reason"] = None
                    endpoint["failing_since"] = None
                else:
                    endpoint["disabled_reason"] = "Disabled by the caller"
            endpoint["updated_at"] = now_iso()
            return endpoint

        return public_endpoint(await store.update_endpoint(endpoint_id, change))

    @delete(
        "/{endpoint_id:str}",
        operation_id="DeleteWebhookEndpoint",
        summary="Delete an endpoint (pending deliveries to it stop)",
        status_code=HTTP_204_NO_CONTENT,
        responses=problems(400, 401, 404, 429),
    )
    async def delete_endpoint(
        self, state: State, tenant: Tenant, endpoint_id: FromPath[str]
    ) -> None:
        resources: Resources = state.resources
        store = WebhookStore(resources.redis, resources.keys)
        endpoint = await store.endpoint_for_tenant(tenant, endpoint_id)
        await store.delete_endpoint(endpoint)

    @post(
        "/{endpoint_id:str}/rotate-secret",
        operation_id="RotateWebhookSecret",
        summary="New signing secret; the old one keeps signing alongside it for 24 hours",
        status_code=200,
        responses=problems(400, 401, 404, 429),
    )
    async def rotate_secret(
        self, state: State, tenant: Tenant, endpoint_id: FromPath[str]
    ) -> EndpointWithSecret:
        resources: Resources = state.resources
        store = WebhookStore(resources.redis, resources.keys)
        await store.endpoint_for_tenant(tenant, endpoint_id)
        secret = new_secret()
        now = time.time()

        def rotate(endpoint: dict[str, Any]) -> dict[str, Any]:
            endpoint["secrets"] = rotated(
                endpoint.get("secrets", []), secret, now, ROTATION_OVERLAP_SECONDS
            )
            endpoint["updated_at"] = now_iso()
            return endpoint

        updated = await store.update_endpoint(endpoint_id, rotate)
        return EndpointWithSecret(**public_endpoint(updated).model_dump(), secret=secret)

    @post(
        "/job-secret",
        operation_id="CreateJobWebhookSecret",
        summary="Create the tenant's signing secret for jobs' own webhook_url (shown once)",
        status_code=HTTP_201_CREATED,
        responses=problems(400, 401, 409, 429),
    )
    async def create_job_secret(self, state: State, tenant: Tenant) -> JobWebhookSecretShown:
        resources: Resources = state.resources
        secret = new_secret()
        now = now_iso()
        record = {
            "id": f"jobsecret:{tenant}",
            "tenant": tenant,
            "secrets": [{"secret": secret, "created_at": time.time(), "expires_at": None}],
            "created_at": now,
            "rotated_at": None,
        }
        try:
            await WebhookStore(resources.redis, resources.keys).create_job_secret(record)
        except WriteConflict:
            raise Conflict(
                "This tenant already has a job webhook secret; rotate it to get a new one",
                code="job_secret_exists",
            ) from None
        return JobWebhookSecretShown(**_job_secret_view(record).model_dump(), secret=secret)

    @get(
        "/job-secret",
        operation_id="GetJobWebhookSecret",
        summary="When the job webhook secret was made and rotated (never the secret itself)",
        responses=problems(400, 401, 404, 429),
    )
    async def get_job_secret(self, state: State, tenant: Tenant) -> JobWebhookSecret:
        resources: Resources = state.resources
        record = await WebhookStore(resources.redis, resources.keys).job_secret(tenant)
        if record is None:
            raise NotFound("This tenant has no job webhook secret; create one first")
        return _job_secret_view(record)

    @post(
        "/job-secret/rotate",
        operation_id="RotateJobWebhookSecret",
        summary="New job webhook secret; the old one keeps signing alongside it for 24 hours",
        status_code=200,
        responses=problems(400, 401, 404, 429),
    )
    async def rotate_job_secret(self, state: State, tenant: Tenant) -> JobWebhookSecretShown:
        resources: Resources = state.resources
        secret = new_secret()
        now = time.time()

        def rotate(record: dict[str, Any]) -> dict[str, Any]:
            record["secrets"] = rotated(record["secrets"], secret, now, ROTATION_OVERLAP_SECONDS)
            record["rotated_at"] = now_iso()
            return record

        try:
            record = await WebhookStore(resources.redis, resources.keys).update_job_secret(
                tenant, rotate
            )
        except RecordGone:
            raise NotFound("This tenant has no job webhook secret; create one first") from None
        return JobWebhookSecretShown(**_job_secret_view(record).model_dump(), secret=secret)

    @post(
        "/{endpoint_id:str}/test",
        operation_id="TestWebhookEndpoint",
        summary="Send a signed ping event to the endpoint",
        status_code=HTTP_202_ACCEPTED,
        responses=problems(400, 401, 404, 409, 429),
    )
    async def test_endpoint(
        self, state: State, tenant: Tenant, endpoint_id: FromPath[str]
    ) -> Delivery:
        resources: Resources = state.resources
        store = WebhookStore(resources.redis, resources.keys)
        endpoint = await store.endpoint_for_tenant(tenant, endpoint_id)
        if not endpoint.get("enabled"):
            raise Conflict(f"The endpoint is disabled: {endpoint.get('disabled_reason')}")
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
            url=endpoint["url"],
            job_id=None,
        )
        await store.add_delivery(delivery)
        await tasks.enqueue_delivery(resources.queue, delivery["id"], attempt=1)
        return public_delivery(delivery)

    @get(
        "/{endpoint_id:str}/deliveries",
        operation_id="ListWebhookDeliveries",
        summary="An endpoint's deliveries, newest first, optionally by state",
        responses=problems(400, 401, 404, 429),
    )
    async def list_deliveries(
        self,
        state: State,
        tenant: Tenant,
        endpoint_id: FromPath[str],
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT)] = 20,
        after: FromQuery[str | None] = None,
        delivery_state: Annotated[DeliveryState | None, QueryParameter(name="state")] = None,
    ) -> ListResponse[Delivery]:
        resources: Resources = state.resources
        store = WebhookStore(resources.redis, resources.keys)
        await store.endpoint_for_tenant(tenant, endpoint_id)
        found, has_more = await walk_newest_first(
            lambda size, cursor: store.delivery_page(endpoint_id, limit=size, after=cursor),
            store.deliveries,
            None if delivery_state is None else (lambda d: d["state"] == delivery_state),
            limit=limit,
            after=after,
        )
        return ListResponse(data=[public_delivery(d) for d in found], has_more=has_more)

    @get(
        "/deliveries/{delivery_id:str}",
        operation_id="GetWebhookDelivery",
        summary="One delivery with every attempt",
        responses=problems(400, 401, 404, 429),
    )
    async def get_delivery(
        self, state: State, tenant: Tenant, delivery_id: FromPath[str]
    ) -> DeliveryWithAttempts:
        resources: Resources = state.resources
        store = WebhookStore(resources.redis, resources.keys)
        delivery = await store.delivery_for_tenant(tenant, delivery_id)
        attempts = [Attempt(**a) for a in await store.attempts(delivery_id)]
        return DeliveryWithAttempts(**public_delivery(delivery).model_dump(), attempts=attempts)

    @post(
        "/deliveries/{delivery_id:str}/retry",
        operation_id="RetryWebhookDelivery",
        summary="Send a finished delivery again (same webhook-id, so receivers can dedupe)",
        status_code=HTTP_202_ACCEPTED,
        responses=problems(400, 401, 404, 409, 429),
    )
    async def retry_delivery(
        self, state: State, tenant: Tenant, delivery_id: FromPath[str]
    ) -> Delivery:
        resources: Resources = state.resources
        store = WebhookStore(resources.redis, resources.keys)
        delivery = await store.delivery_for_tenant(tenant, delivery_id)
        if delivery["state"] == "pending":
            raise Conflict("The delivery is still pending; it will be attempted on schedule")
        if delivery.get("endpoint_id"):
            endpoint = await store.endpoint(delivery["endpoint_id"])
            if endpoint is None or not endpoint.get("enabled"):
                raise Conflict("The endpoint is deleted or disabled; enable it first")
        attempts_so_far = int(delivery["attempt_count"])

        def reopen(d: dict[str, Any]) -> dict[str, Any]:
            d.update(
                state="pending", next_attempt_at=time.time(), finished_at=None, updated_at=now_iso()
            )
            return d

        delivery = await store.update_delivery(delivery_id, reopen)
        await tasks.enqueue_delivery(resources.queue, delivery_id, attempt=attempts_so_far + 1)
        return public_delivery(delivery)

    @post(
        "/openai",
        operation_id="ReceiveOpenAIWebhook",
        summary="OpenAI's signed fine-tuning webhooks: trigger an immediate sync",
        status_code=HTTP_202_ACCEPTED,
        security=[{}],
        operation_class=OpenAIWebhookOperation,
        responses=problems(400, 413, 503),
    )
    async def receive_openai(self, request: Request[Any, Any, Any], state: State) -> Accepted:
        resources: Resources = state.resources
        verifier = resources.openai_webhooks
        if verifier is None:
            raise Unavailable(
                "OPENAI_WEBHOOK_SECRET is not configured", code="webhooks_not_configured"
            )
        body = await request.body()
        try:
            event = verifier.webhooks.unwrap(body, dict(request.headers))
        except openai.InvalidWebhookSignatureError as exc:
            raise MalformedRequest(
                f"Webhook signature is not valid: {exc}", code="invalid_signature"
            ) from None
        except ValueError as exc:
            raise MalformedRequest(
                f"Webhook body is not a valid event: {exc}", code="invalid_event"
            ) from None
        upstream_id = getattr(getattr(event, "data", None), "id", None)
        if not isinstance(upstream_id, str) or not getattr(event, "type", "").startswith(
            "fine_tuning.job."
        ):
            return Accepted(status="ignored")
        job_id = await JobStore(resources.redis, resources.keys).id_for_upstream(upstream_id)
        if job_id is None:
            logger.info("webhook for an unknown upstream job", extra={"upstream_job": upstream_id})
            return Accepted(status="unknown_job")
        await resources.redis.set(resources.keys.job_poke(job_id), "1", ex=3600)
        await tasks.sync_job_now(resources.queue, job_id)
        return Accepted(status="sync_scheduled")
