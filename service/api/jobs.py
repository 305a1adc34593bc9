"""`/jobs`: start, follow and steer fine-tuning jobs.

The API never calls the provider's training endpoints: it records intent in
Redis and enqueues the worker, which does the upstream work.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.params import FromPath, FromQuery, QueryParameter
from litestar.status_codes import HTTP_202_ACCEPTED
from pydantic import BaseModel, ConfigDict, Field

from service import tasks
from service.api.auth import Tenant
from service.api.links import location
from service.api.openapi_docs import example_body
from service.api.pagination import MAX_LIMIT, ListResponse, walk_newest_first
from service.api.problems import problems
from service.domain.charts import loss_curve_svg
from service.domain.jobs import (
    JobStatus,
    check_action,
    check_metadata,
    check_suffix,
    is_terminal,
)
from service.errors import Conflict, InvalidContent
from service.idempotency import Outcome, fingerprint, run_once
from service.outbound_guard import check_webhook_url
from service.resources import Resources
from service.schemas import Job, public_job
from service.store.datasets import DatasetStore
from service.store.jobs import JobStore
from service.store.records import new_id, now_iso
from service.store.webhooks import WebhookStore

Auto = Literal["auto"]


class Hyperparameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n_epochs: Auto | Annotated[int, Field(ge=1, le=50)] = "auto"
    batch_size: Auto | Annotated[int, Field(ge=1, le=256)] = "auto"
    learning_rate_multiplier: Auto | Annotated[float, Field(gt=0, le=10)] = "auto"
    beta: Auto | Annotated[float, Field(gt=0, le=2)] | None = Field(
        default=None, description="DPO only: weight of the penalty between policy and reference"
    )


class Method(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["supervised", "dpo"] = "supervised"
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)


class JobCreate(BaseModel):
    """Train `model` on a stored dataset."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "dataset_id": "ds_4Q2nXkP0aZc1t9Lw8Yb3Hs7R",
                    "model": "gpt-4o-mini-2024-07-18",
                    "suffix": "hiroyuki",
                    "method": {"type": "supervised", "hyperparameters": {"n_epochs": 3}},
                    "webhook_url": "https://example.com/hooks/fine-tuning",
                }
            ]
        },
    )

    dataset_id: str = Field(min_length=3, max_length=64)
    validation_dataset_id: str | None = Field(default=None, min_length=3, max_length=64)
    model: str = Field(min_length=1, max_length=128)
    method: Method | None = None
    hyperparameters: Hyperparameters | None = Field(
        default=None, description="Older form of method.hyperparameters (supervised only)"
    )
    suffix: str | None = Field(default=None, min_length=1, max_length=64)
    seed: int | None = Field(default=None, ge=0, le=2147483647)
    metadata: dict[str, str] | None = None
    webhook_url: str | None = Field(default=None, max_length=2048)


class JobEvent(BaseModel):
    id: str
    object: str
    job_id: str
    created_at: str
    source: Literal["service", "provider"]
    type: str
    level: str
    message: str
    data: dict[str, Any] | None = None


class MetricPoint(BaseModel):
    step: int
    train_loss: float | None = None
    train_mean_token_accuracy: float | None = None
    valid_loss: float | None = None
    valid_mean_token_accuracy: float | None = None
    full_valid_loss: float | None = None
    full_valid_mean_token_accuracy: float | None = None


class Metrics(BaseModel):
    job_id: str
    total_steps: int | None
    data: list[MetricPoint]


class Checkpoint(BaseModel):
    id: str
    object: Literal["job.checkpoint"] = "job.checkpoint"
    created_at: str
    step_number: int
    fine_tuned_model_checkpoint: str
    metrics: dict[str, Any]


def upstream_method(body: JobCreate, kind: str) -> dict[str, Any]:
    """Our request -> the provider's `method` object (the legacy form folds in)."""
    if body.method is not None and body.hyperparameters is not None:
        raise InvalidContent("Give either method or hyperparameters, not both")
    method = body.method or Method(hyperparameters=body.hyperparameters or Hyperparameters())
    wanted = "dpo" if kind == "preference" else "supervised"
    if method.type != wanted:
        raise InvalidContent(
            f"A {kind} dataset trains with method {wanted!r}, not {method.type!r}",
            code="method_mismatch",
        )
    hyper = method.hyperparameters.model_dump(exclude_none=True)
    if method.type == "supervised" and "beta" in hyper:
        raise InvalidContent("beta applies to DPO only", code="invalid_hyperparameters")
    return {"type": method.type, method.type: {"hyperparameters": hyper}}


def _metadata_filter(request: Request[Any, Any, Any]) -> dict[str, str]:
    found: dict[str, str] = {}
    for key, value in request.query_params.items():
        if key.startswith("metadata[") and key.endswith("]"):
            found[key[len("metadata[") : -1]] = value
    return found


class JobController(Controller):
    path = "/jobs"
    tags = ["Jobs"]

    @post(
        "/",
        operation_id="CreateJob",
        summary="Start fine-tuning a model on a dataset",
        status_code=HTTP_202_ACCEPTED,
        responses=problems(400, 401, 404, 409, 413, 422, 429),
    )
    async def create_job(
        self,
        request: Request[Any, Any, Any],
        state: State,
        tenant: Tenant,
        data: Annotated[JobCreate, example_body(JobCreate)],
    ) -> Response[Job]:
        resources: Resources = state.resources

        async def produce() -> Outcome:
            settings = resources.settings
            datasets = DatasetStore(resources.redis, resources.keys)
            dataset = await datasets.get_for_tenant(tenant, data.dataset_id)
            if dataset.get("status") != "ready":
                raise Conflict(
                    f"Dataset {dataset['id']} is {dataset.get('status')}, not ready for training",
                    code="dataset_not_ready",
                )
            validation = None
            if data.validation_dataset_id:
                validation = await datasets.get_for_tenant(tenant, data.validation_dataset_id)
                if validation.get("status") != "ready":
                    raise Conflict(
                        f"Validation dataset {validation['id']} is {validation.get('status')}",
                        code="dataset_not_ready",
                    )
                if validation.get("kind") != dataset.get("kind"):
                    raise InvalidContent(
                        "The validation dataset is of another kind than the training one"
                    )
            if data.model not in settings.fine_tunable_models:
                raise InvalidContent(
                    f"Model {data.model!r} cannot be fine-tuned here; choose one of: "
                    + ", ".join(settings.fine_tunable_models),
                    code="model_not_fine_tunable",
                )
            method = upstream_method(data, dataset.get("kind", "chat"))
            metadata = check_metadata(data.metadata)
            suffix = check_suffix(data.suffix)
            webhook_url = None
            if data.webhook_url:
                webhook_url = await check_webhook_url(
                    data.webhook_url, allow_private=settings.webhook_allow_private_networks
                )
                secrets = WebhookStore(resources.redis, resources.keys)
                if not settings.auth_disabled and await secrets.job_secret(tenant) is None:
                    raise Conflict(
                        "A job's webhook_url is signed with this tenant's job webhook secret, "
                        "and there is none yet: create it with POST /webhooks/job-secret "
                        "(shown once), then start the job",
                        code="job_secret_missing",
                    )
            now = now_iso()
            record: dict[str, Any] = {
                "id": new_id("job"),
                "tenant": tenant,
                "status": JobStatus.PENDING.value,
                "dataset_id": dataset["id"],
                "validation_dataset_id": validation["id"] if validation else None,
                "model": data.model,
                "method": method,
                "suffix": suffix,
                "seed": data.seed,
                "metadata": metadata,
                "webhook_url": webhook_url,
                "fine_tuned_model": None,
                "error": None,
                "trained_tokens": None,
                "estimated_finish": None,
                "cancel_requested": False,
                "provider": resources.provider.name if resources.provider else "openai",
                "upstream": {},
                "created_at": now,
                "updated_at": now,
                "finished_at": None,
            }
            jobs = JobStore(resources.redis, resources.keys)
            await jobs.create(record)
            # Enqueue only after the record is durable; the reconciler covers a lost enqueue.
            await tasks.enqueue_sync_job(resources.queue, record["id"])
            return Outcome(
                HTTP_202_ACCEPTED,
                public_job(record).model_dump(mode="json"),
                {"Location": location(request, f"/jobs/{record['id']}")},
            )

        return await run_once(
            request, resources, tenant, fingerprint(data.model_dump_json()), produce
        )

    @get(
        "/",
        operation_id="ListJobs",
        summary="List jobs, newest first",
        responses=problems(400, 401, 429),
    )
    async def list_jobs(
        self,
        request: Request[Any, Any, Any],
        state: State,
        tenant: Tenant,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT)] = 20,
        after: FromQuery[str | None] = None,
        status: FromQuery[JobStatus | None] = None,
        dataset_id: FromQuery[str | None] = None,
    ) -> ListResponse[Job]:
        resources: Resources = state.resources
        jobs = JobStore(resources.redis, resources.keys)
        wanted_metadata = _metadata_filter(request)

        def matches(job: dict[str, Any]) -> bool:
            if status is not None and job["status"] != status:
                return False
            if dataset_id is not None and job["dataset_id"] != dataset_id:
                return False
            metadata = job.get("metadata") or {}
            return all(metadata.get(k) == v for k, v in wanted_metadata.items())

        filtered = status is not None or dataset_id is not None or bool(wanted_metadata)
        found, has_more = await walk_newest_first(
            lambda size, cursor: jobs.page(tenant, limit=size, after=cursor),
            jobs.many,
            matches if filtered else None,
            limit=limit,
            after=after,
        )
        return ListResponse(data=[public_job(j) for j in found], has_more=has_more)

    @get(
        "/{job_id:str}",
        operation_id="GetJob",
        summary="One job",
        responses=problems(400, 401, 404, 429),
    )
    async def get_job(self, state: State, tenant: Tenant, job_id: FromPath[str]) -> Job:
        resources: Resources = state.resources
        return public_job(
            await JobStore(resources.redis, resources.keys).get_for_tenant(tenant, job_id)
        )

    @get(
        "/{job_id:str}/events",
        operation_id="ListJobEvents",
        summary="The job's timeline: our transitions and the provider's events, newest first",
        responses=problems(400, 401, 404, 429),
    )
    async def list_events(
        self,
        state: State,
        tenant: Tenant,
        job_id: FromPath[str],
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT)] = 50,
        after: FromQuery[str | None] = None,
    ) -> ListResponse[JobEvent]:
        resources: Resources = state.resources
        jobs = JobStore(resources.redis, resources.keys)
        await jobs.get_for_tenant(tenant, job_id)
        events, has_more = await jobs.events_page(job_id, limit=limit, after=after)
        return ListResponse(data=[JobEvent(**e) for e in events], has_more=has_more)

    @get(
        "/{job_id:str}/checkpoints",
        operation_id="ListJobCheckpoints",
        summary="Checkpoints the provider kept, newest first",
        responses=problems(400, 401, 404, 429),
    )
    async def list_checkpoints(
        self, state: State, tenant: Tenant, job_id: FromPath[str]
    ) -> ListResponse[Checkpoint]:
        resources: Resources = state.resources
        jobs = JobStore(resources.redis, resources.keys)
        await jobs.get_for_tenant(tenant, job_id)
        found = await jobs.checkpoints(job_id)
        return ListResponse(data=[Checkpoint(**c) for c in found], has_more=False)

    @get(
        "/{job_id:str}/metrics",
        operation_id="GetJobMetrics",
        summary="Per-step training and validation loss and accuracy",
        responses=problems(400, 401, 404, 429),
    )
    async def get_metrics(self, state: State, tenant: Tenant, job_id: FromPath[str]) -> Metrics:
        resources: Resources = state.resources
        jobs = JobStore(resources.redis, resources.keys)
        await jobs.get_for_tenant(tenant, job_id)
        points = await jobs.metrics(job_id)
        total = max((int(p.get("total_steps") or 0) for p in points), default=0) or None
        return Metrics(
            job_id=job_id,
            total_steps=total,
            data=[
                MetricPoint(**{k: v for k, v in p.items() if k in MetricPoint.model_fields})
                for p in points
            ],
        )

    @get(
        "/{job_id:str}/metrics.svg",
        operation_id="GetJobLossChart",
        summary="The loss curve drawn as an SVG image",
        media_type="image/svg+xml",
        responses=problems(400, 401, 404, 429),
    )
    async def get_metrics_svg(
        self, state: State, tenant: Tenant, job_id: FromPath[str]
    ) -> Response[str]:
        resources: Resources = state.resources
        jobs = JobStore(resources.redis, resources.keys)
        job = await jobs.get_for_tenant(tenant, job_id)
        points = await jobs.metrics(job_id)
        title = job.get("fine_tuned_model") or f"{job_id} ({job['status']})"
        return Response(
            loss_curve_svg(points, title=title),
            media_type="image/svg+xml",
            headers={
                "Cache-Control": "no-store" if not is_terminal(job["status"]) else "max-age=3600"
            },
        )

    async def _act(
        self, resources: Resources, tenant: Tenant, job_id: FromPath[str], action: str
    ) -> Job:
        jobs = JobStore(resources.redis, resources.keys)
        job = await jobs.get_for_tenant(tenant, job_id)
        has_upstream = bool((job.get("upstream") or {}).get("job_id"))
        check_action(job["status"], action, has_upstream=has_upstream)
        if action == "cancel" and not has_upstream and job["status"] == JobStatus.PENDING:
            # Nothing exists upstream yet: cancel here and now. The worker re-reads
            # the job before every upstream call, so it will not create one.
            job, _ = await jobs.transition(
                job_id,
                JobStatus.CANCELLED,
                "Cancelled before anything was sent to the provider",
                also=lambda j: j.update(cancel_requested=True),
            )
        else:

            def request(j: dict[str, Any]) -> dict[str, Any] | None:
                if is_terminal(j["status"]):
                    return None
                if action == "cancel":
                    j["cancel_requested"] = True
                j["requested_action"] = action
                j["updated_at"] = now_iso()
                return j

            job = await jobs.update(job_id, request)
            if is_terminal(job["status"]):
                raise Conflict(f"The job is already {job['status']}")
            await resources.redis.set(resources.keys.job_poke(job_id), "1", ex=3600)
            await tasks.sync_job_now(resources.queue, job_id)
        return public_job(job)

    @post(
        "/{job_id:str}/cancel",
        operation_id="CancelJob",
        summary="Cancel a job (at once if nothing was sent upstream yet)",
        status_code=HTTP_202_ACCEPTED,
        responses=problems(400, 401, 404, 409, 429),
    )
    async def cancel_job(self, state: State, tenant: Tenant, job_id: FromPath[str]) -> Job:
        return await self._act(state.resources, tenant, job_id, "cancel")

    @post(
        "/{job_id:str}/pause",
        operation_id="PauseJob",
        summary="Pause a running job",
        status_code=HTTP_202_ACCEPTED,
        responses=problems(400, 401, 404, 409, 429),
    )
    async def pause_job(self, state: State, tenant: Tenant, job_id: FromPath[str]) -> Job:
        return await self._act(state.resources, tenant, job_id, "pause")

    @post(
        "/{job_id:str}/resume",
        operation_id="ResumeJob",
        summary="Resume a paused job",
        status_code=HTTP_202_ACCEPTED,
        responses=problems(400, 401, 404, 409, 429),
    )
    async def resume_job(self, state: State, tenant: Tenant, job_id: FromPath[str]) -> Job:
        return await self._act(state.resources, tenant, job_id, "resume")
