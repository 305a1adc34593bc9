"""`/v1/fine_tuning/jobs`: OpenAI's job calls onto `service.jobs` (create, actions)
and the job store (lists, events, checkpoints).

Problems surface at creation, earlier than OpenAI reports them: a training file
with fewer examples than the model needs (`invalid_n_examples`) or with a bad
line (`invalid_training_file`, naming the line), or a model whose training
window has closed, are a 400 before anything is stored or spent.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Annotated, Any, Literal

from litestar import Controller, Request, Response, get, post
from litestar.params import FromPath, FromQuery, QueryParameter
from pydantic import BaseModel, ConfigDict, Field

from service.api.auth import Injected, Tenant
from service.api.idempotency import Outcome, fingerprint, run_once
from service.api.jobs import Hyperparameters, find_jobs
from service.api.openapi_docs import example_body
from service.domain.jobs import JobStatus, is_terminal
from service.domain.records import Dataset, Job
from service.errors import InvalidContent, NotFound
from service.facade.errors import OpenAIError, not_found, openai_errors, translate
from service.facade.shapes import checkpoint_object, event_object, first_problem, job_object
from service.jobs.actions import Action, act
from service.jobs.creation import NewJob, create_job
from service.resources import Resources

MAX_LIST = 100
# How long an action's answer waits for the worker to carry it out, so that
# cancel answers `cancelled` and pause `paused` as OpenAI's do.
ACTION_WAIT_SECONDS = 10.0
ACTION_POLL_SECONDS = 0.05


class MethodHyperparameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)


class FineTuneMethod(BaseModel):
    """OpenAI's `method`: `{"type": t, t: {"hyperparameters": {...}}}`."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["supervised", "dpo"]
    supervised: MethodHyperparameters | None = None
    dpo: MethodHyperparameters | None = None


class FineTuningJobCreate(BaseModel):
    """The body of `client.fine_tuning.jobs.create(...)`."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"training_file": "ds_4Q2nXkP0aZc1t9Lw8Yb3Hs7R", "model": "gpt-4o-mini"},
            ]
        },
    )

    model: str = Field(min_length=1, max_length=128)
    training_file: str = Field(min_length=1, max_length=64)
    validation_file: str | None = Field(default=None, max_length=64)
    hyperparameters: Hyperparameters | None = None
    method: FineTuneMethod | None = None
    suffix: str | None = Field(default=None, min_length=1, max_length=64)
    seed: int | None = Field(default=None, ge=0, le=2147483647)
    metadata: dict[str, str] | None = Field(default=None, max_length=16)
    integrations: list[dict[str, Any]] | None = None
    provider_options: dict[str, Any] | None = Field(
        default=None,
        description="This service's extension (send it with the SDK's extra_body): options "
        "only the job's provider understands, such as the self-hosted trainer's LoRA settings",
    )

    def new_job(self) -> NewJob:
        method = None
        if self.method is not None:
            chosen = getattr(self.method, self.method.type)
            hyper = chosen.hyperparameters if chosen else Hyperparameters()
            method = {"type": self.method.type, "hyperparameters": hyper.model_dump()}
        return NewJob(
            dataset_id=self.training_file,
            validation_dataset_id=self.validation_file,
            model=self.model,
            method=method,
            hyperparameters=self.hyperparameters.model_dump() if self.hyperparameters else None,
            suffix=self.suffix,
            # OpenAI picks a seed when none is given, and reports it on the job.
            seed=self.seed if self.seed is not None else secrets.randbelow(2**31),
            metadata=self.metadata,
            provider_options=self.provider_options or {},
        )


async def _training_data(resources: Resources, tenant: str, file_id: str, param: str) -> Dataset:
    """The dataset behind a file the job names, or OpenAI's 400 saying why it cannot train."""
    try:
        dataset = await resources.datasets.get_for_tenant(tenant, file_id)
    except NotFound:
        raise OpenAIError(400, f"invalid {param}: {file_id}", param=param) from None
    code = f"invalid_{param}"
    if dataset.status == "validating":
        progress = f" ({dataset.progress.percent}% read)" if dataset.progress else ""
        raise OpenAIError(
            400,
            f"File {file_id} is still being validated{progress}; start the job once its "
            "status is 'processed'",
            param=param,
            code="file_not_ready",
        )
    if dataset.status == "invalid":
        where = first_problem(dataset)
        total = f" ({dataset.error_total} problems in all)" if dataset.error_total > 1 else ""
        raise OpenAIError(
            400,
            f"Invalid {param.replace('_', ' ')} {file_id}: {where}{total}",
            param=param,
            code=code,
        )
    return dataset


def _refusal(exc: InvalidContent, request: FineTuningJobCreate, dataset: Dataset) -> OpenAIError:
    if exc.code == "too_few_examples":
        minimum = exc.extra.get("min_examples", "the model's minimum number of")
        return OpenAIError(
            400,
            f"Training file has {dataset.example_count} example(s), but must have at least "
            f"{minimum} examples",
            param="training_file",
            code="invalid_n_examples",
        )
    if exc.code == "model_not_fine_tunable":
        return OpenAIError(
            400,
            f"Model {request.model} is not available for fine-tuning or does not exist.",
            param="model",
            code="model_not_available",
        )
    if exc.code == "model_training_closed":
        return OpenAIError(400, exc.detail, param="model", code="model_not_available")
    return translate(exc)


async def _job(resources: Resources, tenant: str, job_id: str) -> Job:
    try:
        return await resources.jobs.get_for_tenant(tenant, job_id)
    except NotFound:
        raise not_found("fine-tuning job", job_id, "fine_tuning_job_id") from None


class FineTuningController(Controller):
    path = "/fine_tuning/jobs"

    @post(
        "/", operation_id="OpenAICreateFineTuningJob", status_code=200, responses=openai_errors(413)
    )
    async def create(
        self,
        request: Request[Any, Any, Any],
        resources: Injected,
        tenant: Tenant,
        data: Annotated[FineTuningJobCreate, example_body(FineTuningJobCreate)],
    ) -> Response[dict[str, Any]]:
        """Start a job on a file uploaded with purpose `fine-tune` (OpenAI's call)."""
        if data.integrations:
            raise OpenAIError(
                400,
                "This service does not run fine-tuning integrations (Weights and Biases); "
                "follow the job's events and metrics instead",
                param="integrations",
            )
        training = await _training_data(resources, tenant, data.training_file, "training_file")
        if data.validation_file:
            await _training_data(resources, tenant, data.validation_file, "validation_file")

        async def produce() -> Outcome:
            try:
                job = await create_job(resources, tenant, data.new_job())
            except InvalidContent as exc:
                raise _refusal(exc, data, training) from None
            return Outcome(200, job_object(job), {})

        return await run_once(
            request, resources, tenant, fingerprint(data.model_dump_json()), produce
        )

    @get("/", operation_id="OpenAIListFineTuningJobs", responses=openai_errors())
    async def list_jobs(
        self,
        request: Request[Any, Any, Any],
        resources: Injected,
        tenant: Tenant,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_LIST)] = 20,
        after: FromQuery[str | None] = None,
    ) -> dict[str, Any]:
        """The tenant's jobs, newest first; `metadata[key]=value` filters."""
        found, has_more = await find_jobs(request, resources, tenant, limit=limit, after=after)
        return {"object": "list", "data": [job_object(j) for j in found], "has_more": has_more}

    @get(
        "/{fine_tuning_job_id:str}",
        operation_id="OpenAIRetrieveFineTuningJob",
        responses=openai_errors(),
    )
    async def retrieve(
        self, resources: Injected, tenant: Tenant, fine_tuning_job_id: FromPath[str]
    ) -> dict[str, Any]:
        return job_object(await _job(resources, tenant, fine_tuning_job_id))

    async def _act(
        self, resources: Resources, tenant: str, job_id: str, action: Action
    ) -> dict[str, Any]:
        await _job(resources, tenant, job_id)
        job = await act(resources, tenant, job_id, action)
        before = job.status
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ACTION_WAIT_SECONDS
        # The worker carries the wish out; answer once it has (or with the job as it is).
        while job.requested_action is not None and not is_terminal(job.status):
            if loop.time() > deadline:
                break
            await asyncio.sleep(ACTION_POLL_SECONDS)
            job = await resources.jobs.get_for_tenant(tenant, job_id)
            if job.status != before and job.requested_action is None:
                break
        return job_object(job)

    @post(
        "/{fine_tuning_job_id:str}/cancel",
        operation_id="OpenAICancelFineTuningJob",
        status_code=200,
        responses=openai_errors(),
    )
    async def cancel(
        self, resources: Injected, tenant: Tenant, fine_tuning_job_id: FromPath[str]
    ) -> dict[str, Any]:
        return await self._act(resources, tenant, fine_tuning_job_id, "cancel")

    @post(
        "/{fine_tuning_job_id:str}/pause",
        operation_id="OpenAIPauseFineTuningJob",
        status_code=200,
        responses=openai_errors(),
    )
    async def pause(
        self, resources: Injected, tenant: Tenant, fine_tuning_job_id: FromPath[str]
    ) -> dict[str, Any]:
        return await self._act(resources, tenant, fine_tuning_job_id, "pause")

    @post(
        "/{fine_tuning_job_id:str}/resume",
        operation_id="OpenAIResumeFineTuningJob",
        status_code=200,
        responses=openai_errors(),
    )
    async def resume(
        self, resources: Injected, tenant: Tenant, fine_tuning_job_id: FromPath[str]
    ) -> dict[str, Any]:
        return await self._act(resources, tenant, fine_tuning_job_id, "resume")

    @get(
        "/{fine_tuning_job_id:str}/events",
        operation_id="OpenAIListFineTuningEvents",
        responses=openai_errors(),
    )
    async def events(
        self,
        resources: Injected,
        tenant: Tenant,
        fine_tuning_job_id: FromPath[str],
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_LIST)] = 20,
        after: FromQuery[str | None] = None,
    ) -> dict[str, Any]:
        """The job's timeline, newest first: our transitions and the provider's events."""
        await _job(resources, tenant, fine_tuning_job_id)
        found, has_more = await resources.jobs.events_page(
            fine_tuning_job_id, limit=limit, after=after
        )
        return {"object": "list", "data": [event_object(e) for e in found], "has_more": has_more}

    @get(
        "/{fine_tuning_job_id:str}/checkpoints",
        operation_id="OpenAIListFineTuningCheckpoints",
        responses=openai_errors(),
    )
    async def checkpoints(
        self,
        resources: Injected,
        tenant: Tenant,
        fine_tuning_job_id: FromPath[str],
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_LIST)] = 10,
        after: FromQuery[str | None] = None,
    ) -> dict[str, Any]:
        """Checkpoints the provider kept, newest first."""
        await _job(resources, tenant, fine_tuning_job_id)
        found = await resources.jobs.checkpoints(fine_tuning_job_id)
        ids = [c.id for c in found]
        start = 0
        if after is not None:
            if after not in ids:
                raise OpenAIError(
                    400, f"Invalid 'after': no checkpoint {after} on this job", param="after"
                )
            start = ids.index(after) + 1
        page = found[start : start + limit]
        data = [checkpoint_object(fine_tuning_job_id, c) for c in page]
        return {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": start + limit < len(found),
        }


__all__ = ["FineTuningController", "JobStatus"]
