"""`/webhooks`: endpoints that receive signed job events, their deliveries, and
`POST /webhooks/openai` where OpenAI's own webhooks come in."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.params import FromPath, FromQuery, QueryParameter
from litestar.status_codes import HTTP_201_CREATED, HTTP_202_ACCEPTED, HTTP_204_NO_CONTENT
from pydantic import BaseModel, ConfigDict, Field

from service.api.auth import Injected, Tenant
from service.api.idempotency import Outcome, fingerprint, run_once
from service.api.links import location
from service.api.openapi_docs import OpenAIWebhookOperation, example_body
from service.api.pagination import MAX_LIMIT, ListResponse, walk_newest_first
from service.api.problems import problems
from service.domain.records import Delivery as DeliveryRecord
from service.domain.records import Endpoint as EndpointRecord
from service.domain.records import JobSecret
from service.domain.stamps import iso_from_unix
from service.webhooks import endpoints

# `POST /webhooks/openai` is the provider named "openai" (the default one).
DEFAULT_WEBHOOK_PROVIDER = "openai"

EventType = Literal[
    "job.succeeded",
    "job.failed",
    "job.cancelled",
    "job.running",
    "job.checkpoint.created",
    "evaluation.completed",
    "evaluation.failed",
]
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


def _job_secret_view(record: JobSecret) -> JobWebhookSecret:
    overlaps = [e.expires_at for e in record.secrets if e.expires_at is not None]
    return JobWebhookSecret(
        created_at=record.created_at,
        rotated_at=record.rotated_at,
        previous_expires_at=iso_from_unix(max(overlaps)) if overlaps else None,
    )


def public_endpoint(record: EndpointRecord) -> Endpoint:
    return Endpoint(**record.model_dump(include=set(Endpoint.model_fields) - {"object"}))


def public_delivery(record: DeliveryRecord) -> Delivery:
    values = record.model_dump(include=set(Delivery.model_fields) - {"object"})
    if record.state != "pending":
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
        responses=problems(400, 401, 409, 413, 422, 429),
    )
    async def create_endpoint(
        self,
        request: Request[Any, Any, Any],
        resources: Injected,
        tenant: Tenant,
        data: Annotated[EndpointCreate, example_body(EndpointCreate)],
    ) -> Response[EndpointWithSecret]:
        async def produce() -> Outcome:
            endpoint, secret = await endpoints.create_endpoint(
                resources, tenant, data.url, list(data.event_types), data.description
            )
            shown = EndpointWithSecret(
                **public_endpoint(endpoint).model_dump(), secret=secret
            ).model_dump(mode="json")
            return Outcome(
                HTTP_201_CREATED,
                shown,
                {"Location": location(request, f"/webhooks/{endpoint.id}")},
                # A replay must not hand the secret out again, so it is never kept for one.
                replay_body={**shown, "secret": None},
            )

        return await run_once(
            request, resources, tenant, fingerprint(data.model_dump_json()), produce
        )

    @get(
        "/",
        operation_id="ListWebhookEndpoints",
        summary="List endpoints",
        responses=problems(400, 401, 429),
    )
    async def list_endpoints(
        self,
        resources: Injected,
        tenant: Tenant,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT)] = 20,
        after: FromQuery[str | None] = None,
    ) -> ListResponse[Endpoint]:
        store = resources.webhooks
        page = await store.endpoint_page(tenant, limit=limit, after=after)
        found = await store.endpoints(page.ids)
        return ListResponse(data=[public_endpoint(e) for e in found], has_more=page.has_more)

    @post(
        "/job-secret",
        operation_id="CreateJobWebhookSecret",
        summary="Create the tenant's signing secret for jobs' own webhook_url (shown once)",
        status_code=HTTP_201_CREATED,
        responses=problems(400, 401, 409, 429),
    )
    async def create_job_secret(self, resources: Injected, tenant: Tenant) -> JobWebhookSecretShown:
        record, secret = await endpoints.create_job_secret(resources, tenant)
        return JobWebhookSecretShown(**_job_secret_view(record).model_dump(), secret=secret)

    @get(
        "/job-secret",
        operation_id="GetJobWebhookSecret",
        summary="When the job webhook secret was made and rotated (never the secret itself)",
        responses=problems(400, 401, 404, 429),
    )
    async def get_job_secret(self, resources: Injected, tenant: Tenant) -> JobWebhookSecret:
        return _job_secret_view(await endpoints.job_secret(resources, tenant))

    @post(
        "/job-secret/rotate",
        operation_id="RotateJobWebhookSecret",
        summary="New job webhook secret; the old one keeps signing alongside it for 24 hours",
        status_code=200,
        responses=problems(400, 401, 404, 429),
    )
    async def rotate_job_secret(self, resources: Injected, tenant: Tenant) -> JobWebhookSecretShown:
        record, secret = await endpoints.rotate_job_secret(resources, tenant)
        return JobWebhookSecretShown(**_job_secret_view(record).model_dump(), secret=secret)

    @get(
        "/{endpoint_id:str}",
        operation_id="GetWebhookEndpoint",
        summary="One endpoint",
        responses=problems(400, 401, 404, 429),
    )
    async def get_endpoint(
        self, resources: Injected, tenant: Tenant, endpoint_id: FromPath[str]
    ) -> Endpoint:
        return public_endpoint(await resources.webhooks.endpoint_for_tenant(tenant, endpoint_id))

    @patch(
        "/{endpoint_id:str}",
        operation_id="UpdateWebhookEndpoint",
        summary="Change url, event types, description, or enable/disable",
        responses=problems(400, 401, 404, 413, 422, 429),
    )
    async def update_endpoint(
        self,
        resources: Injected,
        tenant: Tenant,
        endpoint_id: FromPath[str],
        data: Annotated[EndpointUpdate, example_body(EndpointUpdate)],
    ) -> Endpoint:
        changes = endpoints.EndpointChanges(
            url=data.url,
            event_types=list(data.event_types) if data.event_types is not None else None,
            description=data.description,
            enabled=data.enabled,
        )
        return public_endpoint(
            await endpoints.update_endpoint(resources, tenant, endpoint_id, changes)
        )

    @delete(
        "/{endpoint_id:str}",
        operation_id="DeleteWebhookEndpoint",
        summary="Delete an endpoint (pending deliveries to it stop)",
        status_code=HTTP_204_NO_CONTENT,
        responses=problems(400, 401, 404, 429),
    )
    async def delete_endpoint(
        self, resources: Injected, tenant: Tenant, endpoint_id: FromPath[str]
    ) -> None:
        await endpoints.delete_endpoint(resources, tenant, endpoint_id)

    @post(
        "/{endpoint_id:str}/rotate-secret",
        operation_id="RotateWebhookSecret",
        summary="New signing secret; the old one keeps signing alongside it for 24 hours",
        status_code=200,
        responses=problems(400, 401, 404, 429),
    )
    async def rotate_secret(
        self, resources: Injected, tenant: Tenant, endpoint_id: FromPath[str]
    ) -> EndpointWithSecret:
        endpoint, secret = await endpoints.rotate_endpoint_secret(resources, tenant, endpoint_id)
        return EndpointWithSecret(**public_endpoint(endpoint).model_dump(), secret=secret)

    @post(
        "/{endpoint_id:str}/test",
        operation_id="TestWebhookEndpoint",
        summary="Send a signed ping event to the endpoint",
        status_code=HTTP_202_ACCEPTED,
        responses=problems(400, 401, 404, 409, 429),
    )
    async def test_endpoint(
        self, resources: Injected, tenant: Tenant, endpoint_id: FromPath[str]
    ) -> Delivery:
        return public_delivery(await endpoints.send_test(resources, tenant, endpoint_id))

    @get(
        "/{endpoint_id:str}/deliveries",
        operation_id="ListWebhookDeliveries",
        summary="An endpoint's deliveries, newest first, optionally by state",
        responses=problems(400, 401, 404, 429),
    )
    async def list_deliveries(
        self,
        resources: Injected,
        tenant: Tenant,
        endpoint_id: FromPath[str],
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT)] = 20,
        after: FromQuery[str | None] = None,
        delivery_state: Annotated[DeliveryState | None, QueryParameter(name="state")] = None,
    ) -> ListResponse[Delivery]:
        store = resources.webhooks
        await store.endpoint_for_tenant(tenant, endpoint_id)
        found, has_more = await walk_newest_first(
            lambda size, cursor: store.delivery_page(endpoint_id, limit=size, after=cursor),
            store.deliveries,
            None if delivery_state is None else (lambda d: d.state == delivery_state),
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
        self, resources: Injected, tenant: Tenant, delivery_id: FromPath[str]
    ) -> DeliveryWithAttempts:
        delivery, recorded = await resources.webhooks.delivery_with_attempts(tenant, delivery_id)
        attempts = [Attempt(**a.model_dump()) for a in recorded]
        return DeliveryWithAttempts(**public_delivery(delivery).model_dump(), attempts=attempts)

    @post(
        "/deliveries/{delivery_id:str}/retry",
        operation_id="RetryWebhookDelivery",
        summary="Send a finished delivery again (same webhook-id, so receivers can dedupe)",
        status_code=HTTP_202_ACCEPTED,
        responses=problems(400, 401, 404, 409, 429),
    )
    async def retry_delivery(
        self, resources: Injected, tenant: Tenant, delivery_id: FromPath[str]
    ) -> Delivery:
        return public_delivery(await endpoints.retry_delivery(resources, tenant, delivery_id))

    @post(
        "/openai",
        operation_id="ReceiveOpenAIWebhook",
        summary="OpenAI's signed fine-tuning webhooks: trigger an immediate sync",
        status_code=HTTP_202_ACCEPTED,
        security=[{}],
        operation_class=OpenAIWebhookOperation,
        responses=problems(400, 413, 503),
    )
    async def receive_openai(
        self, request: Request[Any, Any, Any], resources: Injected
    ) -> Accepted:
        body = await request.body()
        status = await endpoints.receive_provider_webhook(
            resources, DEFAULT_WEBHOOK_PROVIDER, body, dict(request.headers)
        )
        return Accepted(status=status)

    @post(
        "/providers/{provider_name:str}",
        operation_id="ReceiveProviderWebhook",
        summary="A configured provider's signed webhooks: trigger an immediate sync",
        status_code=HTTP_202_ACCEPTED,
        security=[{}],
        operation_class=OpenAIWebhookOperation,
        responses=problems(400, 404, 413, 503),
    )
    async def receive_provider(
        self, request: Request[Any, Any, Any], resources: Injected, provider_name: FromPath[str]
    ) -> Accepted:
        body = await request.body()
        status = await endpoints.receive_provider_webhook(
            resources, provider_name, body, dict(request.headers)
        )
        return Accepted(status=status)
