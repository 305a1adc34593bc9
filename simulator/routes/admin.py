"""`/_sim`: controls for tests and demos. Outside `/v1`, so faults and API keys never apply."""

from __future__ import annotations

from typing import Any

from litestar import Request, delete, get, post, put
from litestar.params import FromPath
from pydantic import ValidationError

from simulator.api_errors import OpenAIError
from simulator.config import FaultConfig
from simulator.edge import Edge
from simulator.routes.injection import Sim
from simulator.routes.parsing import AnyRequest, json_object


def _edge(request: AnyRequest) -> Edge:
    edge: Edge = request.app.state["edge"]
    return edge


def _faults_from(body: dict[str, Any]) -> FaultConfig:
    try:
        return FaultConfig.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or None
        raise OpenAIError(400, f"Invalid fault config: {first['msg']}", param=where) from None


@get("/state", operation_id="SimState")
async def sim_state(sim: Sim) -> dict[str, Any]:
    return sim.stats()


@get("/stats", operation_id="SimStats")
async def sim_stats(sim: Sim) -> dict[str, Any]:
    return sim.stats()


@get("/faults", operation_id="SimGetFaults")
async def get_faults(sim: Sim) -> dict[str, Any]:
    return {**sim.faults.model_dump(mode="json"), "injected": dict(sim.faults_injected)}


@put("/faults", operation_id="SimReplaceFaults")
async def replace_faults(request: AnyRequest, sim: Sim) -> dict[str, Any]:
    """Replace the whole fault config; fields left out take their defaults."""
    _edge(request).set_faults(_faults_from(await json_object(request)))
    return sim.faults.model_dump(mode="json")


@post("/faults", status_code=200, operation_id="SimUpdateFaults")
async def update_faults(request: AnyRequest, sim: Sim) -> dict[str, Any]:
    """Change only the fields sent; the rest of the current config stays."""
    merged = {**sim.faults.model_dump(), **(await json_object(request))}
    _edge(request).set_faults(_faults_from(merged))
    return sim.faults.model_dump(mode="json")


@delete("/faults", status_code=200, operation_id="SimClearFaults")
async def clear_faults(request: AnyRequest, sim: Sim) -> dict[str, Any]:
    _edge(request).set_faults(FaultConfig())
    return sim.faults.model_dump(mode="json")


@post("/jobs/{job_id:str}/fail", status_code=200, operation_id="SimFailJob")
async def fail_job(
    job_id: FromPath[str], request: Request[Any, Any, Any], sim: Sim
) -> dict[str, Any]:
    raw = await request.body()
    body = await json_object(request) if raw.strip() else {}
    code = body.get("code") or "server_error"
    message = body.get("message") or "The job failed due to an internal error."
    if not isinstance(code, str) or not isinstance(message, str):
        raise OpenAIError(400, "code and message must be strings")
    job = sim.job(job_id)
    sim.fail_job(job, code, message)
    return {"id": job.id, "status": job.status, "fail_pending": job.status != "failed"}


@post("/reset", status_code=200, operation_id="SimReset")
async def reset(request: AnyRequest, sim: Sim) -> dict[str, Any]:
    """Forget every file, job and model; faults and time return to their start-up values."""
    sim.reset()
    _edge(request).set_faults(sim.faults)
    return sim.stats()


@get("/time", operation_id="SimGetTime")
async def get_time(sim: Sim) -> dict[str, Any]:
    return {"job_seconds": sim.job_seconds}


@put("/time", operation_id="SimSetTime")
async def set_time(request: AnyRequest, sim: Sim) -> dict[str, Any]:
    body = await json_object(request)
    value = body.get("job_seconds")
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise OpenAIError(400, "job_seconds must be a positive number", param="job_seconds")
    sim.tick()  # time already spent counts at the old pace
    sim.job_seconds = float(value)
    return {"job_seconds": sim.job_seconds}


handlers = [
    sim_state,
    sim_stats,
    get_faults,
    replace_faults,
    update_faults,
    clear_faults,
    fail_job,
    reset,
    get_time,
    set_time,
]
