"""Liveness, readiness and the problem shape, through the real app and Redis."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

from tests.conftest import REPO, RedisServer, auth


async def wait_for_status(client, path: str, status: int, timeout: float = 10.0):  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        response = await client.get(path)
        if response.status_code == status or asyncio.get_running_loop().time() > deadline:
            return response
        await asyncio.sleep(0.1)


async def test_health_needs_no_key_and_says_ok(client) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response.headers["x-request-id"].startswith("req_")


async def test_ready_names_missing_worker_then_recovers_when_one_starts(client, settings) -> None:
    response = await client.get("/ready")
    assert response.status_code == 503
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["code"] == "no_worker"
    assert "worker heartbeat" in body["detail"]

    from worker.main import build_worker, close_worker

    running = build_worker(
        settings, handle_signals=False, poll_delay=0.05, follow_idle_seconds=0.05
    )
    task = asyncio.create_task(running.async_run())
    try:
        response = await wait_for_status(client, "/ready", 200)
        assert response.status_code == 200
        assert response.json()["workers"] == 1
    finally:
        await close_worker(running)
        await asyncio.gather(task, return_exceptions=True)
    # A worker that said goodbye no longer counts.
    response = await wait_for_status(client, "/ready", 503)
    assert response.json()["code"] == "no_worker"


async def test_ready_names_redis_when_it_is_down_and_recovers(
    client, env, redis_server: RedisServer
) -> None:
    # A real worker process: when Redis goes away its arq loop ends, and
    # `python -m worker` starts a fresh one once Redis answers again.
    worker = subprocess.Popen(
        [sys.executable, "-m", "worker"],
        cwd=REPO,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert (await wait_for_status(client, "/ready", 200, timeout=20)).status_code == 200
        redis_server.stop()
        response = await client.get("/ready")
        assert response.status_code == 503
        assert response.json()["code"] == "redis_unavailable"
        assert "Redis" in response.json()["detail"]
        # Other routes say so too, as a problem, not a crash.
        listing = await client.get("/datasets", headers=auth())
        assert listing.status_code == 503
        # A plain read, which takes the shared Redis line rather than the pool.
        one = await client.get("/jobs/ftjob_missing", headers=auth())
        assert one.status_code == 503
        assert one.json()["code"] == "redis_unavailable"
        redis_server.start()
        response = await wait_for_status(client, "/ready", 200, timeout=30)
        assert response.status_code == 200
        # The line connects again by itself: the job is simply not there.
        assert (await client.get("/jobs/ftjob_missing", headers=auth())).status_code == 404
    finally:
        worker.terminate()
        worker.wait(timeout=20)


async def test_unknown_route_is_a_problem_with_the_callers_request_id(client) -> None:
    response = await client.get("/no-such-thing", headers={"X-Request-ID": "caller-123"})
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.headers["x-request-id"] == "caller-123"
    body = response.json()
    assert body["status"] == 404
    assert body["title"]
    assert body["instance"] == "urn:request:caller-123"


async def test_malformed_request_id_is_replaced(client) -> None:
    response = await client.get("/health", headers={"X-Request-ID": "bad id with spaces"})
    assert response.headers["x-request-id"].startswith("req_")


async def test_the_docs_page_loads_nothing_from_other_hosts(client) -> None:
    """/docs renders on a machine without internet: every asset comes from this server."""
    import re

    page = await client.get("/docs")
    assert page.status_code == 200
    assert "swagger" in page.text.lower()
    sources = re.findall(r"""(?:src|href)=['"]([^'"]+)['"]""", page.text)
    assert sources
    assert not [s for s in sources if "://" in s], sources
    for source in sources:
        asset = await client.get(source)
        assert asset.status_code == 200, source
        assert len(asset.content) > 100
    spec = await client.get("/docs/openapi.json")
    assert spec.status_code == 200
    assert spec.json()["info"]["title"] == "Fine-tuning service"
    assert (await client.get("/docs/assets/swagger-editor-bundle.js")).status_code == 404
