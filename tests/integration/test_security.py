"""Idempotency keys, the shared rate limit and body limits."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import httpx
import pytest

from tests.conftest import REPO, auth, free_port
from tests.seeds import chat_examples, jsonl


def dataset_upload() -> dict:
    return {"files": {"file": ("ok.jsonl", jsonl(chat_examples(10)), "application/jsonl")}}


async def test_same_key_same_body_replays_the_first_response(client) -> None:
    headers = {**auth(), "Idempotency-Key": "upload-1"}
    first = await client.post("/datasets", headers=headers, **dataset_upload())
    second = await client.post("/datasets", headers=headers, **dataset_upload())
    assert first.status_code == second.status_code == 201
    assert second.json()["id"] == first.json()["id"]
    assert second.headers["idempotent-replayed"] == "true"
    assert second.headers["location"] == first.headers["location"]
    listing = (await client.get("/datasets", headers=auth())).json()
    assert len(listing["data"]) == 1


async def test_same_key_different_body_is_422(client) -> None:
    headers = {**auth(), "Idempotency-Key": "job-key"}
    dataset = (await client.post("/datasets", headers=auth(), **dataset_upload())).json()
    body = {"dataset_id": dataset["id"], "model": "gpt-4o-mini-2024-07-18"}
    first = await client.post("/jobs", headers=headers, json=body)
    assert first.status_code == 202
    other = await client.post("/jobs", headers=headers, json={**body, "suffix": "other"})
    assert other.status_code == 422
    assert other.json()["code"] == "idempotency_key_reused"
    # Another tenant's identical key is its own.
    dataset_b = (
        await client.post("/datasets", headers=auth("tenant-b"), **dataset_upload())
    ).json()
    theirs = await client.post(
        "/jobs",
        headers={**auth("tenant-b"), "Idempotency-Key": "job-key"},
        json={**body, "dataset_id": dataset_b["id"]},
    )
    assert theirs.status_code == 202


async def test_concurrent_requests_with_one_key_create_once(client) -> None:
    dataset = (await client.post("/datasets", headers=auth(), **dataset_upload())).json()
    headers = {**auth(), "Idempotency-Key": "race"}
    body = {"dataset_id": dataset["id"], "model": "gpt-4o-mini-2024-07-18"}
    responses = await asyncio.gather(
        *(client.post("/jobs", headers=headers, json=body) for _ in range(5))
    )
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {202, 409}
    created = {r.json()["id"] for r in responses if r.status_code == 202}
    assert len(created) == 1
    assert len((await client.get("/jobs", headers=auth())).json()["data"]) == 1


async def test_a_refused_request_releases_its_key(client) -> None:
    headers = {**auth(), "Idempotency-Key": "bad-then-good"}
    refused = await client.post(
        "/jobs",
        headers=headers,
        json={"dataset_id": "ds_missing", "model": "gpt-4o-mini-2024-07-18"},
    )
    assert refused.status_code == 404
    again = await client.post(
        "/jobs",
        headers=headers,
        json={"dataset_id": "ds_missing", "model": "gpt-4o-mini-2024-07-18"},
    )
    assert again.status_code == 404
    assert "idempotent-replayed" not in again.headers


async def test_oversized_bodies_are_413(client, settings) -> None:
    client.app.state.resources.settings = settings.model_copy(update={"max_upload_bytes": 1000})
    response = await client.post(
        "/datasets", headers=auth(), files={"file": ("big.jsonl", b"x" * 5000, "application/jsonl")}
    )
    assert response.status_code == 413
    assert response.headers["content-type"].startswith("application/problem+json")
    big_json = await client.post(
        "/jobs",
        headers={**auth(), "content-type": "application/json"},
        content=b"[" + b"1," * 700_000 + b"1]",
    )
    assert big_json.status_code == 413


@pytest.mark.slow
def test_rate_limit_is_shared_by_two_api_processes(env: dict[str, str]) -> None:
    ports = [free_port(), free_port()]
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "service"],
            cwd=REPO,
            env={**os.environ, **env, "PORT": str(port), "RATE_LIMIT_PER_MINUTE": "10"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for port in ports
    ]
    try:
        for port in ports:
            deadline = time.monotonic() + 20
            while True:
                try:
                    httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
        # Stay inside one one-minute window so the count is exact.
        if time.time() % 60 > 45:
            time.sleep(61 - time.time() % 60)
        statuses = []
        for i in range(14):
            port = ports[i % 2]
            response = httpx.get(f"http://127.0.0.1:{port}/datasets", headers=auth(), timeout=5)
            statuses.append(response.status_code)
        assert statuses.count(200) == 10
        assert statuses.count(429) == 4
        limited = httpx.get(f"http://127.0.0.1:{ports[0]}/datasets", headers=auth(), timeout=5)
        assert int(limited.headers["retry-after"]) >= 1
        assert limited.headers["ratelimit-limit"] == "10"
        other = httpx.get(
            f"http://127.0.0.1:{ports[1]}/datasets", headers=auth("tenant-b"), timeout=5
        )
        assert other.status_code == 200
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=20)
