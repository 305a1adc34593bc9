"""A job as callers see it: `GET /jobs/{id}` answers it and webhook payloads carry
it as `data`, so both are built here from the stored record."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from service.domain.jobs import JobStatus
from service.domain.records import Job as JobRecord
from service.evaluations.view import JobEvaluation


class JobError(BaseModel):
    code: str
    message: str
    param: str | None = None


class ProviderState(BaseModel):
    name: str
    job_id: str | None = None
    status: str | None = None
    training_file_id: str | None = None
    validation_file_id: str | None = None


class JobProgress(BaseModel):
    """How far training has come, from the provider's metrics events."""

    step: int
    total_steps: int | None = Field(
        description="The provider's total when its events say it, else the service's estimate"
    )
    percent: float | None
    estimated_finish: str | None = Field(
        description="The provider's estimate, else the pace so far carried to the last step"
    )


class Job(BaseModel):
    """The contract's `Job` (its name in openapi.json is what clients are generated from)."""

    id: str
    object: Literal["job"] = "job"
    status: JobStatus
    dataset_id: str
    validation_dataset_id: str | None
    model: str
    method: dict[str, Any]
    suffix: str | None
    seed: int | None
    metadata: dict[str, str]
    webhook_url: str | None
    fine_tuned_model: str | None
    error: JobError | None
    trained_tokens: int | None
    estimated_finish: str | None
    progress: JobProgress | None
    cancel_requested: bool
    provider: ProviderState
    evaluation: JobEvaluation | None = Field(
        description="The evaluation of the tuned model against its base on the validation "
        "examples, started when the job succeeded (null when there are none)"
    )
    created_at: str
    updated_at: str
    finished_at: str | None


def public_job(job: JobRecord, *, evaluation: JobEvaluation | None = None) -> Job:
    """The caller's view of a stored job.

    `evaluation`: the brief of the job's evaluation, which lives in its own record
    (the caller reads it: `service.evaluations.automatic.job_evaluation_of`).

    Built with `model_construct`: every value comes from a record that was
    validated when it was read, so validating it again would only cost time
    on the hottest read (`GET /jobs/{id}`, and every webhook payload).
    """
    upstream = job.upstream
    error = job.error
    progress = job.progress
    return Job.model_construct(
        id=job.id,
        object="job",
        status=job.status,
        dataset_id=job.dataset_id,
        validation_dataset_id=job.validation_dataset_id,
        model=job.model,
        method=job.method,
        suffix=job.suffix,
        seed=job.seed,
        metadata=job.metadata,
        webhook_url=job.webhook_url,
        # Null until the tuned model answers chat (not while it is being deployed).
        fine_tuned_model=job.fine_tuned_model if job.status == JobStatus.SUCCEEDED else None,
        error=JobError.model_construct(code=error.code, message=error.message, param=error.param)
        if error
        else None,
        trained_tokens=job.trained_tokens,
        estimated_finish=job.estimated_finish,
        progress=JobProgress.model_construct(
            step=progress.step,
            total_steps=progress.total_steps,
            percent=progress.percent,
            estimated_finish=progress.estimated_finish,
        )
        if progress
        else None,
        cancel_requested=job.cancel_requested,
        evaluation=evaluation,
        provider=ProviderState.model_construct(
            name=job.provider,
            job_id=upstream.job_id,
            status=upstream.status,
            training_file_id=upstream.training_file_id,
            validation_file_id=upstream.validation_file_id,
        ),
        created_at=job.created_at,
        updated_at=job.updated_at,
        finished_at=job.finished_at,
    )
