"""Public views shared by the API and the worker (webhook payloads carry the job
exactly as `GET /jobs/{id}` returns it)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from service.domain.jobs import JobStatus


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


class Job(BaseModel):
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
    cancel_requested: bool
    provider: ProviderState
    created_at: str
    updated_at: str
    finished_at: str | None


def public_job(record: dict[str, Any]) -> Job:
    upstream = record.get("upstream") or {}
    return Job(
        id=record["id"],
        status=record["status"],
        dataset_id=record["dataset_id"],
        validation_dataset_id=record.get("validation_dataset_id"),
        model=record["model"],
        method=record["method"],
        suffix=record.get("suffix"),
        seed=record.get("seed"),
        metadata=record.get("metadata") or {},
        webhook_url=record.get("webhook_url"),
        fine_tuned_model=record.get("fine_tuned_model"),
        error=JobError(**record["error"]) if record.get("error") else None,
        trained_tokens=record.get("trained_tokens"),
        estimated_finish=record.get("estimated_finish"),
        cancel_requested=bool(record.get("cancel_requested")),
        provider=ProviderState(
            name=record.get("provider", "openai"),
            job_id=upstream.get("job_id"),
            status=upstream.get("status"),
            training_file_id=upstream.get("training_file_id"),
            validation_file_id=upstream.get("validation_file_id"),
        ),
        created_at=record["created_at"],
        updated_at=record["updated_at"],
        finished_at=record.get("finished_at"),
    )
