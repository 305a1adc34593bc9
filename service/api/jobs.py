"""`/jobs`: start, follow and steer fine-tuning jobs.

The API never calls a provider's training endpoints: `service.jobs.creation`
records the job and enqueues the worker, which does the upstream work; the
actions record a wish the worker carries out.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from litestar import Controller, Request, Response, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, FromQuery, QueryParameter
from litestar.status_codes import HTTP_202_ACCEPTED
from pydantic import BaseModel, ConfigDict, Field

from service.api.auth import Injected, Tenant
from service.api.idempotency import Outcome, fingerprint, run_once
from service.api.links import location
from service.api.openapi_docs import example_body
from service.api.pagination import MAX_LIMIT, ListResponse, walk_newest_first
from service.api.problems import problems
from service.domain.charts import loss_curve_svg
from service.domain.jobs import JobStatus, is_terminal
from service.domain.records import Job as JobRecord
from service.evaluations.automatic import job_evaluation_of, job_evaluations
from service.jobs.actions import Action, act
from service.jobs.creation import NewJob, create_job
from service.jobs.view import Job, public_job
from service.resources import Resources

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
    provider_options: dict[str, Any] | None = Field(
        default=None,
        description="Options only one provider understands, passed to it as they are "
        '(the self-hosted trainer\'s LoRA settings: {"lora": {"r": 16, "alpha": 32}})',
    )

    def new_job(self) -> NewJob:
        return NewJob(
            dataset_id=self.dataset_id,
            validation_dataset_id=self.validation_dataset_id,
            model=self.model,
            method=self.method.model_dump() if self.method else None,
            hyperparameters=self.hyperparameters.model_dump() if self.hyperparameters else None,
            suffix=self.suffix,
            seed=self.seed,
            metadata=self.metadata,
            webhook_url=self.webhook_url,
            provider_options=self.provider_options or {},
        )


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


class Checkpoint(BaseModel):
    id: str
    object: Literal["job.checkpoint"] = "job.checkpoint"
    created_at: str
    step_number: int
    fine_tuned_model_checkpoint: str
    metrics: dict[str, Any]


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


def _metadata_filter(request: Request[Any, Any, Any]) -> dict[str, str]:
    found: dict[str, str] = {}
    for key, value in request.query_params.items():
        if key.startswith("metadata[") and key.endswith("]"):
            found[key[len("metadata[") : -1]] = value
    return found


async def find_jobs(
    request: Request[Any, Any, Any],
    resources: Resources,
    tenant: str,
    *,
    limit: int,
    after: str | None,
    status: JobStatus | None = None,
    dataset_id: str | None = None,
) -> tuple[list[JobRecord], bool]:
    """A page of the tenant's jobs, newest first, filtered by status, dataset and the
    request's `metadata[key]=value` parameters (shared with /v1)."""
    jobs = resources.jobs
    wanted_metadata = _metadata_filter(request)

    def matches(job: JobRecord) -> bool:
        if status is not None and job.status != status:
            return False
        if dataset_id is not None and job.dataset_id != dataset_id:
            return False
        return all(job.metadata.get(k) == v for k, v in wanted_metadata.items())

    filtered = status is not None or dataset_id is not None or bool(wanted_metadata)
    return await walk_newest_first(
        lambda size, cursor: jobs.page(tenant, limit=size, after=cursor),
        jobs.many,
        matches if filtered else None,
        limit=limit,
        after=after,
    )


async def _shown(resources: Resources, job: JobRecord) -> Job:
    """The job with the brief of its evaluation, when it started one."""
    return public_job(job, evaluation=await job_evaluation_of(resources, job))


class JobController(Controller):
    path = "/jobs"
    tags = ["Jobs"]

    @post(
        "/",
        operation_id="CreateJob",
        summary="Start fine-tuning a model on a dataset",
        status_code=HTTP_202_ACCEPTED,
        responses=problems(400, 401, 404, 409, 413, 422, 429, 503),
    )
    async def create_job(
        self,
        request: Request[Any, Any, Any],
        resources: Injected,
        tenant: Tenant,
        data: Annotated[JobCreate, example_body(JobCreate)],
    ) -> Response[Job]:
        async def produce() -> Outcome:
            job = await create_job(resources, tenant, data.new_job())
            return Outcome(
                HTTP_202_ACCEPTED,
                public_job(job).model_dump(mode="json"),
                {"Location": location(request, f"/jobs/{job.id}")},
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
        resources: Injected,
        tenant: Tenant,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT)] = 20,
        after: FromQuery[str | None] = None,
        status: FromQuery[JobStatus | None] = None,
        dataset_id: FromQuery[str | None] = None,
    ) -> ListResponse[Job]:
        found, has_more = await find_jobs(
            request,
            resources,
            tenant,
            limit=limit,
            after=after,
            status=status,
            dataset_id=dataset_id,
        )
        briefs = await job_evaluations(resources, found)
        return ListResponse(
            data=[public_job(j, evaluation=briefs.get(j.id)) for j in found], has_more=has_more
        )

    @get(
        "/{job_id:str}",
        operation_id="GetJob",
        summary="One job",
        responses={
            200: ResponseSpec(
                data_container=Job,
                description="Request fulfilled, document follows",
                generate_examples=False,
            ),
            **problems(400, 401, 404, 429),
        },
    )
    async def get_job(
        self, resources: Injected, tenant: Tenant, job_id: FromPath[str]
    ) -> Response[bytes]:
        # The hottest read: pydantic serializes the view to bytes in one pass (the
        # response spec above documents it as a Job).
        job = await _shown(resources, await resources.jobs.get_for_tenant(tenant, job_id))
        return Response(job.model_dump_json().encode(), media_type="application/json")

    @get(
        "/{job_id:str}/events",
        operation_id="ListJobEvents",
        summary="The job's timeline: our transitions and the provider's events, newest first",
        responses=problems(400, 401, 404, 429),
    )
    async def list_events(
        self,
        resources: Injected,
        tenant: Tenant,
        job_id: FromPath[str],
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT)] = 50,
        after: FromQuery[str | None] = None,
    ) -> ListResponse[JobEvent]:
        await resources.jobs.get_for_tenant(tenant, job_id)
        events, has_more = await resources.jobs.events_page(job_id, limit=limit, after=after)
        return ListResponse(
            data=[JobEvent(**event.model_dump()) for event in events], has_more=has_more
        )

    @get(
        "/{job_id:str}/checkpoints",
        operation_id="ListJobCheckpoints",
        summary="Checkpoints the provider kept, newest first",
        responses=problems(400, 401, 404, 429),
    )
    async def list_checkpoints(
        self, resources: Injected, tenant: Tenant, job_id: FromPath[str]
    ) -> ListResponse[Checkpoint]:
        await resources.jobs.get_for_tenant(tenant, job_id)
        found = await resources.jobs.checkpoints(job_id)
        return ListResponse(data=[Checkpoint(**c.model_dump()) for c in found], has_more=False)

    @get(
        "/{job_id:str}/metrics",
        operation_id="GetJobMetrics",
        summary="Per-step training and validation loss and accuracy",
        responses=problems(400, 401, 404, 429),
    )
    async def get_metrics(
        self, resources: Injected, tenant: Tenant, job_id: FromPath[str]
    ) -> Metrics:
        await resources.jobs.get_for_tenant(tenant, job_id)
        points = await resources.jobs.metrics(job_id)
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
        self, resources: Injected, tenant: Tenant, job_id: FromPath[str]
    ) -> Response[str]:
        job = await resources.jobs.get_for_tenant(tenant, job_id)
        points = await resources.jobs.metrics(job_id)
        title = public_job(job).fine_tuned_model or f"{job_id} ({job.status})"
        return Response(
            loss_curve_svg(points, title=title),
            media_type="image/svg+xml",
            headers={
                "Cache-Control": "no-store" if not is_terminal(job.status) else "max-age=3600"
            },
        )

    async def _act(self, resources: Injected, tenant: Tenant, job_id: str, action: Action) -> Job:
        return await _shown(resources, await act(resources, tenant, job_id, action))

    @post(
        "/{job_id:str}/cancel",
        operation_id="CancelJob",
        summary="Cancel a job (at once if nothing was sent upstream yet)",
        status_code=HTTP_202_ACCEPTED,
        responses=problems(400, 401, 404, 409, 429),
    )
    async def cancel_job(self, resources: Injected, tenant: Tenant, job_id: FromPath[str]) -> Job:
        return await self._act(resources, tenant, job_id, "cancel")

    @post(
        "/{job_id:str}/pause",
        operation_id="PauseJob",
        summary="Pause a running job (where the provider can)",
        status_code=HTTP_202_ACCEPTED,
        responses=problems(400, 401, 404, 409, 429),
    )
    async def pause_job(self, resources: Injected, tenant: Tenant, job_id: FromPath[str]) -> Job:
        return await self._act(resources, tenant, job_id, "pause")

    @post(
        "/{job_id:str}/resume",
        operation_id="ResumeJob",
        summary="Resume a paused job",
        status_code=HTTP_202_ACCEPTED,
        responses=problems(400, 401, 404, 409, 429),
    )
    async def resume_job(self, resources: Injected, tenant: Tenant, job_id: FromPath[str]) -> Job:
        return await self._act(resources, tenant, job_id, "resume")
