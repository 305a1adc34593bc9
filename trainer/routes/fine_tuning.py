"""`/v1/fine_tuning/jobs`: create, list, retrieve, cancel, events, checkpoints."""

from __future__ import annotations

from typing import Any

from litestar import get, post
from litestar.params import FromPath

from trainer.errors import APIError, no_such_job
from trainer.job_requests import parse_job_request
from trainer.jobs import Job
from trainer.routes.parsing import (
    AnyRequest,
    Trainer,
    json_object,
    limit_param,
    list_body,
    page_after,
)
from trainer.store import checkpoint_view, event_view


def _job(trainer: Trainer, job_id: str) -> Job:
    job = trainer.jobs.get(job_id)
    if job is None:
        raise no_such_job(job_id)
    return job


def _metadata_filter(request: AnyRequest) -> tuple[dict[str, str], bool]:
    """`metadata[key]=value` pairs, and whether `metadata=null` asked for jobs without any."""
    wanted: dict[str, str] = {}
    null_only = False
    for key, value in request.query_params.items():
        if key.startswith("metadata[") and key.endswith("]"):
            wanted[key[len("metadata[") : -1]] = value
        elif key == "metadata":
            if value != "null":
                raise APIError(
                    400,
                    "Invalid 'metadata' filter: use metadata[key]=value, or metadata=null for "
                    "jobs without metadata.",
                    param="metadata",
                )
            null_only = True
    return wanted, null_only


@post("/fine_tuning/jobs", status_code=200, operation_id="CreateFineTuningJob")
async def create_job(request: AnyRequest, trainer: Trainer) -> dict[str, Any]:
    parsed = parse_job_request(await json_object(request), trainer.catalog, trainer.files)
    return trainer.manager.create(parsed).view()


@get("/fine_tuning/jobs", operation_id="ListFineTuningJobs")
async def list_jobs(request: AnyRequest, trainer: Trainer) -> dict[str, Any]:
    wanted, null_only = _metadata_filter(request)
    jobs = [
        job
        for job in trainer.jobs.newest_first()
        if (not null_only or not job.metadata)
        and all((job.metadata or {}).get(key) == value for key, value in wanted.items())
    ]
    page, has_more = page_after(
        jobs,
        request.query_params.get("after"),
        limit_param(request, 20, 100),
        key=lambda job: job.id,
    )
    return list_body([job.view() for job in page], has_more)


@get("/fine_tuning/jobs/{fine_tuning_job_id:str}", operation_id="RetrieveFineTuningJob")
async def retrieve_job(fine_tuning_job_id: FromPath[str], trainer: Trainer) -> dict[str, Any]:
    return _job(trainer, fine_tuning_job_id).view()


@post(
    "/fine_tuning/jobs/{fine_tuning_job_id:str}/cancel",
    status_code=200,
    operation_id="CancelFineTuningJob",
)
async def cancel_job(fine_tuning_job_id: FromPath[str], trainer: Trainer) -> dict[str, Any]:
    job = await trainer.manager.cancel(_job(trainer, fine_tuning_job_id))
    return job.view()


@post(
    "/fine_tuning/jobs/{fine_tuning_job_id:str}/pause",
    status_code=200,
    operation_id="PauseFineTuningJob",
)
async def pause_job(fine_tuning_job_id: FromPath[str], trainer: Trainer) -> dict[str, Any]:
    job = _job(trainer, fine_tuning_job_id)
    raise APIError(
        400,
        f"Job {job.id} cannot be paused: this trainer does not pause jobs. Cancel it instead.",
        param="fine_tuning_job_id",
        code="unsupported_operation",
    )


@post(
    "/fine_tuning/jobs/{fine_tuning_job_id:str}/resume",
    status_code=200,
    operation_id="ResumeFineTuningJob",
)
async def resume_job(fine_tuning_job_id: FromPath[str], trainer: Trainer) -> dict[str, Any]:
    job = _job(trainer, fine_tuning_job_id)
    raise APIError(
        400,
        f"Job {job.id} is not paused: this trainer does not pause jobs.",
        param="fine_tuning_job_id",
        code="unsupported_operation",
    )


@get("/fine_tuning/jobs/{fine_tuning_job_id:str}/events", operation_id="ListFineTuningEvents")
async def list_events(
    fine_tuning_job_id: FromPath[str], request: AnyRequest, trainer: Trainer
) -> dict[str, Any]:
    job = _job(trainer, fine_tuning_job_id)
    page, has_more = page_after(
        trainer.jobs.events(job.id)[::-1],
        request.query_params.get("after"),
        limit_param(request, 20, 1000),
        key=lambda event: str(event["id"]),
    )
    return list_body([event_view(event) for event in page], has_more)


@get(
    "/fine_tuning/jobs/{fine_tuning_job_id:str}/checkpoints",
    operation_id="ListFineTuningJobCheckpoints",
)
async def list_checkpoints(
    fine_tuning_job_id: FromPath[str], request: AnyRequest, trainer: Trainer
) -> dict[str, Any]:
    job = _job(trainer, fine_tuning_job_id)
    page, has_more = page_after(
        trainer.jobs.checkpoints(job.id)[::-1],
        request.query_params.get("after"),
        limit_param(request, 10, 100),
        key=lambda checkpoint: str(checkpoint["id"]),
    )
    return list_body(
        [checkpoint_view(checkpoint) for checkpoint in page],
        has_more,
        first_id=page[0]["id"] if page else None,
        last_id=page[-1]["id"] if page else None,
    )


handlers = [
    create_job,
    list_jobs,
    retrieve_job,
    cancel_job,
    pause_job,
    resume_job,
    list_events,
    list_checkpoints,
]
