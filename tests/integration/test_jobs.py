"""Jobs end to end: API -> Redis -> real worker -> simulator over HTTP, and back."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.conftest import auth
from tests.integration.conftest import (
    all_events,
    create_dataset,
    injected_faults,
    set_faults,
    sim_client,
    start_job,
    wait_for_job,
)


def upstream_jobs_tagged(base_url: str, job_id: str) -> list:
    client = sim_client(base_url)
    try:
        return list(client.fine_tuning.jobs.list(metadata={"service_job_id": job_id}, limit=100))
    finally:
        client.close()


async def test_dataset_to_tuned_model_with_events_metrics_and_chart(
    client, worker, simulator
) -> None:
    dataset = await create_dataset(client)
    response = await client.post(
        "/jobs",
        headers=auth(),
        json={"dataset_id": dataset["id"], "model": "gpt-4o-mini-2024-07-18", "suffix": "hiroyuki"},
    )
    assert response.status_code == 202
    job = response.json()
    assert job["status"] == "pending"
    assert response.headers["location"].endswith(f"/jobs/{job['id']}")
    assert job["fine_tuned_model"] is None

    done = await wait_for_job(client, job["id"], {"succeeded", "failed", "cancelled"})
    assert done["status"] == "succeeded", done
    assert done["fine_tuned_model"].startswith("ft:gpt-4o-mini-2024-07-18:sim-org:hiroyuki:")
    assert done["error"] is None
    assert done["trained_tokens"] > 0
    assert done["finished_at"] is not None
    assert done["provider"]["job_id"].startswith("ftjob-")
    assert done["provider"]["training_file_id"].startswith("file-")

    events = await all_events(client, job["id"])
    messages = [e["message"] for e in events]
    statuses = [e["data"]["to"] for e in events if e["type"] == "status"]
    assert statuses[0] == "pending"
    assert statuses[-1] == "succeeded"
    assert "uploading" in statuses
    assert any(m.startswith("Fine-tuning job started") for m in messages)
    assert any(m.startswith("New fine-tuned model created") for m in messages)
    ids = [e["id"] for e in events]
    assert len(ids) == len(set(ids))
    metrics_events = [e for e in events if e["type"] == "metrics"]
    assert metrics_events

    metrics = (await client.get(f"/jobs/{job['id']}/metrics", headers=auth())).json()
    losses = [p["train_loss"] for p in metrics["data"] if p["train_loss"] is not None]
    assert len(losses) >= 3
    assert losses[-1] < losses[0]
    steps = [p["step"] for p in metrics["data"]]
    assert steps == sorted(set(steps))

    svg = await client.get(f"/jobs/{job['id']}/metrics.svg", headers=auth())
    assert svg.status_code == 200
    assert svg.headers["content-type"].startswith("image/svg+xml")
    assert "<polyline" in svg.text

    checkpoints = (await client.get(f"/jobs/{job['id']}/checkpoints", headers=auth())).json()
    assert 1 <= len(checkpoints["data"]) <= 3
    assert checkpoints["data"][0]["fine_tuned_model_checkpoint"].startswith("ft:")

    assert len(upstream_jobs_tagged(simulator, job["id"])) == 1


@pytest.mark.parametrize("streamed", [False, True], ids=["from-memory", "from-disk"])
async def test_an_upload_the_provider_failed_once_is_sent_whole_again(
    client, worker, simulator, monkeypatch, streamed
) -> None:
    from service.providers.openai import client as openai_client

    if streamed:  # as a file too big to hold in memory is sent
        monkeypatch.setattr(openai_client, "IN_MEMORY_UPLOAD_LIMIT", 0)
    dataset = await create_dataset(client)
    set_faults(simulator, rate_5xx=1.0, status_5xx=[503], max_faults=1, paths=["/v1/files"])
    job = await start_job(client, dataset["id"])
    done = await wait_for_job(client, job["id"], {"succeeded", "failed", "cancelled"})
    assert done["status"] == "succeeded", done
    assert injected_faults(simulator) == {"5xx": 1}
    upstream = sim_client(simulator)
    try:
        sent = upstream.files.content(done["provider"]["training_file_id"]).read()
    finally:
        upstream.close()
    lines = [json.loads(line) for line in sent.decode().splitlines()]
    assert len(lines) == dataset["example_count"]
    assert all(line["messages"][0]["role"] == "system" for line in lines)


async def test_upstream_failure_keeps_the_providers_code_and_message(
    client, worker, simulator
) -> None:
    dataset = await create_dataset(client)
    job = await start_job(client, dataset["id"])
    running = await wait_for_job(client, job["id"], {"running", "queued", "validating_files"})
    admin = simulator.removesuffix("/v1") + f"/_sim/jobs/{running['provider']['job_id']}/fail"
    async with httpx.AsyncClient() as http:
        response = await http.post(
            admin,
            json={"code": "server_error", "message": "The job failed due to an internal error."},
        )
    assert response.status_code < 300, response.text
    failed = await wait_for_job(client, job["id"], {"failed", "succeeded"})
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "server_error"
    assert failed["error"]["message"] == "The job failed due to an internal error."
    assert failed["fine_tuned_model"] is None


async def test_cancel_pending_job_is_immediate_and_nothing_goes_upstream(client, simulator) -> None:
    dataset = await create_dataset(client)
    job = await start_job(client, dataset["id"])  # no worker running
    response = await client.post(f"/jobs/{job['id']}/cancel", headers=auth())
    assert response.status_code == 202
    assert response.json()["status"] == "cancelled"
    again = await client.post(f"/jobs/{job['id']}/cancel", headers=auth())
    assert again.status_code == 409
    assert "already cancelled" in again.json()["detail"]
    assert upstream_jobs_tagged(simulator, job["id"]) == []


async def test_cancel_running_job_cancels_upstream(client, worker, simulator) -> None:
    dataset = await create_dataset(client)
    job = await start_job(client, dataset["id"])
    await wait_for_job(client, job["id"], {"validating_files", "queued", "running"})
    response = await client.post(f"/jobs/{job['id']}/cancel", headers=auth())
    assert response.status_code == 202
    assert response.json()["cancel_requested"] is True
    done = await wait_for_job(client, job["id"], {"cancelled", "succeeded", "failed"})
    assert done["status"] == "cancelled"
    upstream = upstream_jobs_tagged(simulator, job["id"])
    assert [u.status for u in upstream] == ["cancelled"]


async def test_actions_that_make_no_sense_answer_409(client, simulator) -> None:
    dataset = await create_dataset(client)
    job = await start_job(client, dataset["id"])
    for action in ("pause", "resume"):
        response = await client.post(f"/jobs/{job['id']}/{action}", headers=auth())
        assert response.status_code == 409
        assert "pending" in response.json()["detail"]


async def test_bad_job_requests_are_refused_with_problems(client, simulator) -> None:
    dataset = await create_dataset(client, csv=False)
    cases = [
        ({"dataset_id": "ds_nope", "model": "gpt-4o-mini-2024-07-18"}, 404),
        ({"dataset_id": dataset["id"], "model": "gpt-9"}, 422),
        ({"dataset_id": dataset["id"], "model": "gpt-4o-mini-2024-07-18", "suffix": "a.b"}, 422),
        (
            {
                "dataset_id": dataset["id"],
                "model": "gpt-4o-mini-2024-07-18",
                "method": {"type": "supervised", "hyperparameters": {"n_epochs": 99}},
            },
            400,
        ),
        (
            {
                "dataset_id": dataset["id"],
                "model": "gpt-4o-mini-2024-07-18",
                "metadata": {"service_job_id": "mine"},
            },
            422,
        ),
        ({"dataset_id": dataset["id"], "model": "gpt-4o-mini-2024-07-18", "surprise": 1}, 400),
    ]
    for body, status in cases:
        response = await client.post("/jobs", headers=auth(), json=body)
        assert response.status_code == status, (body, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
    assert (await client.get("/jobs", headers=auth())).json()["data"] == []


async def test_another_tenants_job_answers_404_everywhere(client, simulator) -> None:
    dataset = await create_dataset(client)
    job = await start_job(client, dataset["id"])
    other = auth("tenant-b")
    for method, path in [
        ("GET", f"/jobs/{job['id']}"),
        ("GET", f"/jobs/{job['id']}/events"),
        ("GET", f"/jobs/{job['id']}/checkpoints"),
        ("GET", f"/jobs/{job['id']}/metrics"),
        ("GET", f"/jobs/{job['id']}/metrics.svg"),
        ("POST", f"/jobs/{job['id']}/cancel"),
        ("POST", f"/jobs/{job['id']}/pause"),
        ("POST", f"/jobs/{job['id']}/resume"),
    ]:
        response = await client.request(method, path, headers=other)
        assert response.status_code == 404, (method, path)
    response = await client.post(
        "/jobs",
        headers=other,
        json={"dataset_id": dataset["id"], "model": "gpt-4o-mini-2024-07-18"},
    )
    assert response.status_code == 404
    assert (await client.get("/jobs", headers=other)).json()["data"] == []


async def test_list_filters_and_paginates_newest_first(client, simulator) -> None:
    dataset = await create_dataset(client, csv=False)
    made = [
        await start_job(client, dataset["id"], metadata={"team": "a" if i % 2 else "b"})
        for i in range(5)
    ]
    first = (await client.get("/jobs?limit=2", headers=auth())).json()
    assert [j["id"] for j in first["data"]] == [made[4]["id"], made[3]["id"]]
    assert first["has_more"] is True
    second = (await client.get(f"/jobs?limit=2&after={made[3]['id']}", headers=auth())).json()
    assert [j["id"] for j in second["data"]] == [made[2]["id"], made[1]["id"]]
    team_a = (await client.get("/jobs?metadata[team]=a", headers=auth())).json()
    assert {j["id"] for j in team_a["data"]} == {made[1]["id"], made[3]["id"]}
    bad = await client.get("/jobs?after=job_unknown", headers=auth())
    assert bad.status_code == 400
    too_many = await client.get("/jobs?limit=1000", headers=auth())
    assert too_many.status_code == 400
