"""The worker killed with SIGKILL at the risky moments, then restarted.

Every job must still finish with exactly one upstream job and no duplicated
events. The simulator slows its fine-tuning routes so the kills land while
the worker is in the middle of creating or following jobs.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import pytest

from tests.conftest import REPO, auth
from tests.integration.conftest import all_events, create_dataset, start_job, wait_for_job
from tests.integration.test_jobs import upstream_jobs_tagged

pytestmark = pytest.mark.slow


@pytest.fixture
def sim_config():  # type: ignore[no-untyped-def]
    from simulator.config import FaultConfig, SimulatorConfig

    return SimulatorConfig(
        job_seconds=3.0,
        faults=FaultConfig(latency_ms=700, paths=("/v1/fine_tuning/jobs",)),
    )


def spawn_worker(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "worker"],
        cwd=REPO,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def kill(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)


async def wait_until(client, job_ids, predicate, timeout: float = 40.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        jobs = [(await client.get(f"/jobs/{i}", headers=auth())).json() for i in job_ids]
        if all(predicate(j) for j in jobs):
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not reached: {[j['status'] for j in jobs]}")
        # A restarted worker waits out the killed one's task locks (about 20 s here);
        # polling three jobs at this pace stays well inside the tenant's rate limit.
        await asyncio.sleep(0.25)


async def test_sigkill_after_upload_after_create_and_while_running(client, env, simulator) -> None:
    dataset = await create_dataset(client, csv=False)
    job_ids = [(await start_job(client, dataset["id"]))["id"] for _ in range(3)]

    worker = spawn_worker(env)
    try:
        # 1. Files uploaded, upstream create in flight (the simulator holds it 0.7 s).
        await wait_until(client, job_ids, lambda j: j["provider"]["training_file_id"])
        await asyncio.sleep(0.3)
        kill(worker)
        worker = spawn_worker(env)
        # 2. Upstream jobs recorded.
        await wait_until(client, job_ids, lambda j: j["provider"]["job_id"])
        kill(worker)
        worker = spawn_worker(env)
        # 3. Training under way.
        await wait_until(client, job_ids, lambda j: j["status"] in ("running", "succeeded"))
        kill(worker)
        worker = spawn_worker(env)
        for job_id in job_ids:
            done = await wait_for_job(
                client, job_id, {"succeeded", "failed", "cancelled"}, timeout=60
            )
            assert done["status"] == "succeeded", done
    finally:
        if worker.poll() is None:
            worker.terminate()
            worker.wait(timeout=20)

    for job_id in job_ids:
        assert len(upstream_jobs_tagged(simulator, job_id)) == 1
        events = await all_events(client, job_id)
        ids = [e["id"] for e in events]
        assert len(ids) == len(set(ids))
        provider_messages = [e["message"] for e in events if e["source"] == "provider"]
        assert len(provider_messages) == len(set(provider_messages))


async def test_injected_429_and_5xx_with_latency_still_finish_every_job(
    client, worker, simulator
) -> None:
    import httpx

    admin = simulator.removesuffix("/v1") + "/_sim/faults"
    async with httpx.AsyncClient() as http:
        response = await http.put(
            admin,
            json={
                "rate_429": 0.1,
                "rate_5xx": 0.1,
                "latency_ms": 50,
                "retry_after": 0,
                "retry_after_ms": 50,
            },
        )
        assert response.status_code < 300, response.text
    dataset = await create_dataset(client, csv=False)
    job_ids = [(await start_job(client, dataset["id"]))["id"] for _ in range(4)]
    for job_id in job_ids:
        done = await wait_for_job(client, job_id, {"succeeded", "failed", "cancelled"}, timeout=90)
        assert done["status"] == "succeeded", done
        assert len(upstream_jobs_tagged(simulator, job_id)) == 1
