"""Long work shows how far it has come: a dataset validating in the background,
a job training at the provider (on GET and in the `job.running` webhook)."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from tests.conftest import auth
from tests.integration.conftest import create_dataset, start_job, wait_for_job
from tests.integration.test_datasets_api import upload
from tests.receiver import running_receiver
from tests.seeds import big_chat_jsonl


@pytest.fixture
def sim_config() -> Any:
    from simulator.config import SimulatorConfig

    # Long enough for several polls to land while the job runs.
    return SimulatorConfig(job_seconds=6.0)


@pytest.fixture
def env(env: dict[str, str]) -> dict[str, str]:
    return {**env, "SYNC_VALIDATION_MAX_BYTES": "1000000"}


@pytest.fixture
def frequent_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    """Progress written every 0.1 s instead of every second; what is written is unchanged."""
    from service.datasets import ingest, validation

    monkeypatch.setattr(validation, "PROGRESS_WRITE_SECONDS", 0.1)
    monkeypatch.setattr(ingest, "PROGRESS_EVERY_SECONDS", 0.02)


def instant(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def test_a_dataset_validating_in_the_background_reports_how_far_it_is(
    client, worker, frequent_progress
) -> None:
    content = await big_chat_jsonl(150_000)
    response = await client.post("/datasets", headers=auth(), **upload("big.jsonl", content))
    assert response.status_code == 202, response.text
    dataset_id = response.json()["id"]
    assert response.json()["progress"] is None  # nothing read yet

    seen: list[dict] = []
    deadline = time.monotonic() + 180
    while True:
        dataset = (await client.get(f"/datasets/{dataset_id}", headers=auth())).json()
        if dataset["status"] != "validating":
            break
        if dataset["progress"] is not None:
            seen.append(dataset["progress"])
        assert time.monotonic() < deadline, "validation never ended"
        await asyncio.sleep(0.02)

    assert dataset["status"] == "ready", dataset
    assert dataset["progress"] is None
    assert seen, "no progress was visible while the worker validated"
    first, last = seen[0], seen[-1]
    assert all(p["bytes_total"] == len(content) for p in seen)
    assert 0 < first["bytes_done"] <= last["bytes_done"] <= len(content)
    assert 0 < last["examples_done"] <= 150_000
    assert last["percent"] == pytest.approx(100 * last["bytes_done"] / len(content), abs=0.1)
    with_estimate = [p for p in seen if p["estimated_finish"]]
    assert with_estimate
    assert instant(with_estimate[-1]["estimated_finish"]) >= instant(dataset["created_at"])


async def test_a_running_job_reports_steps_percent_and_finish(client, worker) -> None:
    with running_receiver() as receiver:
        endpoint = await client.post(
            "/webhooks", headers=auth(), json={"url": receiver.url, "event_types": ["job.running"]}
        )
        assert endpoint.status_code == 201, endpoint.text
        dataset = await create_dataset(client)
        job = await start_job(client, dataset["id"])
        assert job["progress"] is None  # not training yet

        running: list[dict] = []
        deadline = time.monotonic() + 60
        while True:
            current = (await client.get(f"/jobs/{job['id']}", headers=auth())).json()
            if current["status"] in {"deploying", "succeeded", "failed", "cancelled"}:
                break
            if current["status"] == "running":
                running.append(current["progress"])
            assert time.monotonic() < deadline, current
            await asyncio.sleep(0.05)
        done = await wait_for_job(client, job["id"], {"succeeded", "failed"})
        deadline = time.monotonic() + 10
        while not receiver.requests:
            assert time.monotonic() < deadline, "job.running never arrived"
            await asyncio.sleep(0.05)

    assert done["status"] == "succeeded", done
    assert running
    assert all(p is not None for p in running)
    total = running[-1]["total_steps"]
    assert total
    assert total > 1
    moving = [p for p in running if p["step"] > 0]
    assert moving, running
    assert [p["step"] for p in running] == sorted(p["step"] for p in running)
    assert all(0 <= p["percent"] <= 100 for p in running)
    assert moving[-1]["percent"] == pytest.approx(100 * moving[-1]["step"] / total, abs=0.1)
    assert any(p["estimated_finish"] for p in moving)
    # Finished: the last step, and no finish to estimate any more.
    assert done["progress"] == {
        "step": total,
        "total_steps": total,
        "percent": 100.0,
        "estimated_finish": None,
    }

    payload = Webhook(endpoint.json()["secret"]).verify(
        receiver.requests[0].body, receiver.requests[0].headers
    )
    assert payload["type"] == "job.running"
    progress = payload["data"]["progress"]
    assert set(progress) == {"step", "total_steps", "percent", "estimated_finish"}
    assert progress["total_steps"]
    assert progress["step"] <= progress["total_steps"]
