"""Many jobs at once in fast time, in one process with one ticker."""

from __future__ import annotations

import asyncio
import time

import httpx

from simulator.config import SimulatorConfig
from simulator.job_driver import JobDriver
from simulator.job_requests import parse_job_request
from simulator.state import SimulatorState
from tests.simulator.conftest import Simulator
from tests.simulator.seed_data import chat_examples


async def test_one_ticker_drives_a_thousand_jobs_to_the_end() -> None:
    """The state and driver the server runs, without HTTP in the way (HTTP is below)."""
    state = SimulatorState(SimulatorConfig(job_seconds=1.0))
    training = state.add_file("a.jsonl", "fine-tune", chat_examples(30))
    finished: list[str] = []
    state.on_job_finished = lambda kind, _job_id: finished.append(kind)
    driver = JobDriver(state)
    driver.start()
    try:
        started = time.monotonic()
        for index in range(1000):
            body = {
                "training_file": training.id,
                "model": "gpt-4o-mini",
                "metadata": {"batch": str(index % 4)},
            }
            state.create_job(parse_job_request(body, state))
        while state.active_jobs and time.monotonic() - started < 15:
            await asyncio.sleep(0.05)
        elapsed = time.monotonic() - started
    finally:
        await driver.stop()
    assert finished == ["fine_tuning.job.succeeded"] * 1000
    stats = state.stats()["jobs"]
    assert stats["by_status"] == {"succeeded": 1000}
    assert stats["by_metadata"]["batch"] == {str(i): 250 for i in range(4)}
    assert elapsed < 8, f"1000 one-second jobs took {elapsed:.1f}s"
    # Every job went through every step: 30 examples x 3 epochs.
    job = next(iter(state.jobs.values()))
    assert sum(event.type == "metrics" for event in job.events) == 90


async def test_two_hundred_jobs_created_concurrently_over_http(simulator: Simulator) -> None:
    simulator.set_job_seconds(0.5)
    async with httpx.AsyncClient(
        base_url=simulator.base_url, headers={"Authorization": "Bearer k"}, timeout=30
    ) as http:
        uploaded = await http.post(
            "/files", files={"file": ("a.jsonl", chat_examples(30))}, data={"purpose": "fine-tune"}
        )
        file_id = uploaded.json()["id"]
        gate = asyncio.Semaphore(10)

        async def create() -> str:
            async with gate:
                response = await http.post(
                    "/fine_tuning/jobs", json={"training_file": file_id, "model": "gpt-4o-mini"}
                )
            response.raise_for_status()
            job_id: str = response.json()["id"]
            return job_id

        ids = await asyncio.gather(*(create() for _ in range(200)))
    assert len(set(ids)) == 200
    deadline = time.monotonic() + 15
    while simulator.state()["jobs"]["active"] and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert simulator.state()["jobs"]["by_status"] == {"succeeded": 200}
