"""The whole stack for integration tests: app + worker + Redis + the simulator over HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import auth
from tests.seeds import SYSTEM_PROMPT, chat_examples, hiroyuki_csv, jsonl

SIMULATOR_WEBHOOK_SECRET = "whsec_c2ltdWxhdG9yLXRvLXNlcnZpY2Utc2VjcmV0"


@pytest.fixture
def sim_config() -> Any:
    from simulator.config import SimulatorConfig

    return SimulatorConfig(job_seconds=1.5)


@pytest.fixture
def simulator(sim_config) -> Iterator[str]:
    """The OpenAI simulator on a free port; yields its base URL (…/v1)."""
    from simulator.testing import running_simulator

    with running_simulator(sim_config) as base_url:
        yield base_url


@pytest.fixture
def env(env: dict[str, str], simulator: str) -> dict[str, str]:
    return {
        **env,
        "OPENAI_BASE_URL": simulator,
        "OPENAI_WEBHOOK_SECRET": SIMULATOR_WEBHOOK_SECRET,
    }


def set_faults(simulator: str, **faults: Any) -> None:
    """Make the simulator misbehave (`/_sim/faults`: rates, latency, paths, seed)."""
    root = simulator.removesuffix("/v1")
    httpx.put(f"{root}/_sim/faults", json=faults, timeout=10).raise_for_status()


def injected_faults(simulator: str) -> dict[str, int]:
    root = simulator.removesuffix("/v1")
    state = httpx.get(f"{root}/_sim/state", timeout=10).json()
    return dict(state["requests"]["faults"])


def sim_client(base_url: str):  # type: ignore[no-untyped-def]
    import openai

    return openai.OpenAI(api_key="sk-test", base_url=base_url, max_retries=6)


async def create_dataset(client, *, tenant: str = "tenant-a", csv: bool = True) -> dict:  # type: ignore[no-untyped-def]
    if csv:
        files = {"file": ("hiroyuki.csv", hiroyuki_csv().encode(), "text/csv")}
        data = {"system_prompt": SYSTEM_PROMPT, "name": "hiroyuki"}
    else:
        files = {"file": ("ok.jsonl", jsonl(chat_examples(12)), "application/jsonl")}
        data = {}
    response = await client.post("/datasets", headers=auth(tenant), files=files, data=data)
    assert response.status_code == 201, response.text
    return response.json()


async def start_job(client, dataset_id: str, *, tenant: str = "tenant-a", **extra: Any) -> dict:  # type: ignore[no-untyped-def]
    body = {
        "dataset_id": dataset_id,
        "model": "gpt-4o-mini-2024-07-18",
        "suffix": "hiroyuki",
        **extra,
    }
    response = await client.post("/jobs", headers=auth(tenant), json=body)
    assert response.status_code == 202, response.text
    return response.json()


async def wait_for_job(
    client, job_id: str, statuses: set[str], *, tenant: str = "tenant-a", timeout: float = 40
) -> dict:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        job = (await client.get(f"/jobs/{job_id}", headers=auth(tenant))).json()
        if job["status"] in statuses:
            return job
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"job stayed {job['status']}: {job}")
        await asyncio.sleep(0.1)


@pytest.fixture
async def trained(client, worker) -> dict:  # type: ignore[no-untyped-def]
    """A succeeded job on the seed CSV."""
    dataset = await create_dataset(client)
    job = await start_job(client, dataset["id"])
    return await wait_for_job(client, job["id"], {"succeeded"})


async def all_events(client, job_id: str, *, tenant: str = "tenant-a") -> list[dict]:  # type: ignore[no-untyped-def]
    """The whole timeline, oldest first, following the cursor."""
    found: list[dict] = []
    after = None
    while True:
        query = f"?limit=100&after={after}" if after else "?limit=100"
        page = (await client.get(f"/jobs/{job_id}/events{query}", headers=auth(tenant))).json()
        found.extend(page["data"])
        if not page["has_more"]:
            return list(reversed(found))
        after = page["data"][-1]["id"]
