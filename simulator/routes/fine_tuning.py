"""`/v1/fine_tuning/jobs`: create, list, retrieve, cancel, pause, resume, events, checkpoints."""

from __future__ import annotations

import time
from typing import Any

from litestar import get, post
from litestar.params import FromPath

from simulator.job_requests import parse_job_request
from simulator.lifecycle import Job
from simulator.routes.injection import Sim
from simulator.routes.parsing import AnyRequest, json_object, limit_param, list_body
from simulator.state import page_after


def _view(job: Job, sim: Sim) -> dict[str, Any]:
    return job.to_dict(now_wall=time.time(), job_seconds=sim.job_seconds)


def _metadata_filter(request: AnyRequest) -> tuple[dict[str, str], bool]:
    """`metadata[key]=value` pairs, and whether `metadata=null` asked for jobs without any."""
    wanted: dict[str, str] = {}
    null_only = False
    for key, value in request.query_params.items():
        if key.startswith("metadata[") and key.endswith("]"):
            wanted[key[len("metadata[") : -1]] = value
        elif key == "metadata" and value == "null":
            null_only = True
    return wanted, null_only


@post("/fine_tuning/jobs", status_code=200, operation_id="createFineTuningJob")
async def create_job(request: AnyRequest, sim: Sim) -> dict[str, Any]:
    job = sim.create_job(parse_job_request(await json_object(request), sim))
    return _view(job, sim)


@get("/fine_tuning/jobs", operation_id="listPaginatedFineTuningJobs")
async def list_jobs(request: AnyRequest, sim: Sim) -> dict[str, Any]:
    wanted, null_only = _metadata_filter(request)
    jobs = sim.jobs_newest_first(wanted or None, null_only)
    page, has_more = page_after(
        jobs, request.query_params.get("after"), limit_param(request, 20, 100)
    )
    for job in page:
        sim.touch(job)
    return list_body([_view(job, sim) for job in page], has_more)


@get("/fine_tuning/jobs/{fine_tuning_job_id:str}", operation_id="retrieveFineTuningJob")
async def retrieve_job(fine_tuning_job_id: FromPath[str], sim: Sim) -> dict[str, Any]:
    return _view(sim.job(fine_tuning_job_id), sim)


@post(
    "/fine_tuning/jobs/{fine_tuning_job_id:str}/cancel",
    status_code=200,
    operation_id="cancelFineTuningJob",
)
async def cancel_job(fine_tuning_job_id: FromPath[str], sim: Sim) -> dict[str, Any]:
    job = sim.job(fine_tuning_job_id)
    sim.cancel_job(job)
    return _view(job, sim)


@post(
    "/fine_tuning/jobs/{fine_tuning_job_id:str}/pause",
    status_code=200,
    operation_id="pauseFineTuningJob",
)
async def pause_job(fine_tuning_job_id: FromPath[str], sim: Sim) -> dict[str, Any]:
    job = sim.job(fine_tuning_job_id)
    sim.pause_job(job)
    return _view(job, sim)


@post(
    "/fine_tuning/jobs/{fine_tuning_job_id:str}/resume",
    status_code=200,
    operation_id="resumeFineTuningJob",
)
async def resume_job(fine_tuning_job_id: FromPath[str], sim: Sim) -> dict[str, Any]:
    job = sim.job(fine_tuning_job_id)
    sim.resume_job(job)
    return _view(job, sim)


@get("/fine_tuning/jobs/{fine_tuning_job_id:str}/events", operation_id="listFineTuningEvents")
async def list_events(
    fine_tuning_job_id: FromPath[str], request: AnyRequest, sim: Sim
) -> dict[str, Any]:
    job = sim.job(fine_tuning_job_id)
    page, has_more = page_after(
        job.events[::-1], request.query_params.get("after"), limit_param(request, 20, 100)
    )
    return list_body([event.to_dict() for event in page], has_more)


@get(
    "/fine_tuning/jobs/{fine_tuning_job_id:str}/checkpoints",
    operation_id="listFineTuningJobCheckpoints",
)
async def list_checkpoints(
    fine_tuning_job_id: FromPath[str], request: AnyRequest, sim: Sim
) -> dict[str, Any]:
    job = sim.job(fine_tuning_job_id)
    page, has_more = page_after(
        job.checkpoints[::-1], request.query_params.get("after"), limit_param(request, 10, 100)
    )
    return list_body(
        [checkpoint.to_dict() for checkpoint in page],
        has_more,
        first_id=page[0].id if page else None,
        last_id=page[-1].id if page else None,
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
