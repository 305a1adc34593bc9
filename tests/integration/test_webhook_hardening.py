"""Webhook delivery cannot be turned against the service or other tenants:
slow and greedy receivers, forged signatures, SSRF probing, replayed secrets."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.conftest import auth
from tests.integration.conftest import create_dataset, start_job, wait_for_job
from tests.integration.test_webhooks import wait_for
from tests.receiver import running_receiver


@dataclass
class RawReceiver:
    """A loopback server that answers webhooks badly, in a way chosen by `behaviour`."""

    url: str = ""
    connections: int = 0
    bytes_sent: int = 0
    sockets: list[socket.socket] = field(default_factory=list)


@contextmanager
def raw_receiver(behaviour: str) -> Iterator[RawReceiver]:
    """`hang`: read the request, never answer. `trickle`: headers, then one byte
    every 0.5 s. `flood`: 200 with a 1.5 GB body, written until the peer hangs up."""
    state = RawReceiver()
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    state.url = f"http://127.0.0.1:{server.getsockname()[1]}/hook"
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        conn.settimeout(30)
        try:
            conn.recv(65536)
            if behaviour == "hang":
                stop.wait(60)
            elif behaviour == "trickle":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
                while not stop.wait(0.5):
                    conn.sendall(b"x")
            elif behaviour == "flood":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1500000000\r\n\r\n")
                block = b"\0" * (1024 * 1024)
                while not stop.is_set() and state.bytes_sent < 1_500_000_000:
                    conn.sendall(block)
                    state.bytes_sent += len(block)
        except OSError:
            pass  # the service hung up on us: what a greedy receiver deserves
        finally:
            conn.close()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            state.connections += 1
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        stop.set()
        thread.join(timeout=5)
        server.close()


@pytest.fixture
def short_deadline(monkeypatch: pytest.MonkeyPatch) -> float:
    from service.webhooks import delivery as webhook_delivery

    monkeypatch.setattr(webhook_delivery, "TIMEOUT_SECONDS", 2.0)
    return 2.0


async def one_attempt(client, endpoint_id: str) -> dict:  # type: ignore[no-untyped-def]
    """Send a test ping and wait for its first attempt to be recorded."""
    sent = (await client.post(f"/webhooks/{endpoint_id}/test", headers=auth())).json()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        delivery = (await client.get(f"/webhooks/deliveries/{sent['id']}", headers=auth())).json()
        if delivery["attempts"]:
            return delivery
        await asyncio.sleep(0.05)
    raise AssertionError("no attempt was recorded")


async def test_a_trickling_receiver_is_cut_off_at_the_attempts_deadline(
    client, worker, short_deadline
) -> None:
    with raw_receiver("trickle") as receiver:
        endpoint = (
            await client.post("/webhooks", headers=auth(), json={"url": receiver.url})
        ).json()
        started = time.monotonic()
        delivery = await one_attempt(client, endpoint["id"])
        elapsed = time.monotonic() - started
    attempt = delivery["attempts"][0]
    assert attempt["status"] is None
    assert attempt["error"] == f"no complete answer within {short_deadline:g} s"
    # The whole attempt, body read included, ended at the deadline (the receiver would
    # have trickled for 500 s).
    assert attempt["latency_ms"] < 10_000
    assert elapsed < 30
    assert delivery["state"] == "pending"  # it will be retried on schedule


async def test_only_a_small_prefix_of_a_huge_answer_is_read(client, worker) -> None:
    with raw_receiver("flood") as receiver:
        endpoint = (
            await client.post("/webhooks", headers=auth(), json={"url": receiver.url})
        ).json()
        delivery = await one_attempt(client, endpoint["id"])
        await asyncio.sleep(0.5)
        sent = receiver.bytes_sent
    attempt = delivery["attempts"][0]
    assert attempt["status"] == 200
    assert delivery["state"] == "succeeded"
    assert len(attempt["response"]) <= 4096
    # The worker hung up after the prefix: the receiver could not push its 1.5 GB.
    assert sent < 64 * 1024 * 1024


class TestTenantIsolation:
    @pytest.fixture
    def env(self, env: dict[str, str]) -> dict[str, str]:
        return {
            **env,
            "WEBHOOK_MAX_ENDPOINTS_PER_TENANT": "60",
            "WEBHOOK_CONCURRENCY_PER_TENANT": "4",
        }

    async def test_one_tenants_hanging_endpoints_do_not_delay_another_tenants_job(
        self, client, worker, monkeypatch
    ) -> None:
        from service.webhooks import delivery as webhook_delivery

        monkeypatch.setattr(webhook_delivery, "TIMEOUT_SECONDS", 8.0)
        with raw_receiver("hang") as hanging, running_receiver() as healthy:
            for _ in range(50):
                created = await client.post("/webhooks", headers=auth(), json={"url": hanging.url})
                assert created.status_code == 201, created.text
            await client.post("/webhooks", headers=auth("tenant-b"), json={"url": healthy.url})
            dataset_a = await create_dataset(client)
            dataset_b = await create_dataset(client, tenant="tenant-b")
            job_a = await start_job(client, dataset_a["id"])
            await wait_for_job(client, job_a["id"], {"succeeded"})
            # Tenant A's job.succeeded now goes to 50 receivers that never answer.
            await wait_for(lambda: hanging.connections >= 1)
            job_b = await start_job(client, dataset_b["id"], tenant="tenant-b")
            await wait_for_job(client, job_b["id"], {"succeeded"}, tenant="tenant-b")
            await wait_for(lambda: len(healthy.requests) >= 1, timeout=20)
            # Tenant B was served while A's deliveries still waited their turn: A never
            # held more than its few slots, so B's sync and webhook found free ones.
            held_at_the_time = hanging.connections
        payload = json.loads(healthy.requests[0].body)
        assert payload["type"] == "job.succeeded"
        assert payload["data"]["id"] == job_b["id"]
        assert held_at_the_time <= 8, held_at_the_time

    async def test_a_tenant_may_register_only_so_many_endpoints(self, client) -> None:
        for _ in range(60):
            ok = await client.post(
                "/webhooks", headers=auth(), json={"url": "http://127.0.0.1:9/h"}
            )
            assert ok.status_code == 201, ok.text
        refused = await client.post(
            "/webhooks", headers=auth(), json={"url": "http://127.0.0.1:9/h"}
        )
        assert refused.status_code == 409
        assert refused.json()["code"] == "too_many_endpoints"
        other = await client.post(
            "/webhooks", headers=auth("tenant-b"), json={"url": "http://127.0.0.1:9/h"}
        )
        assert other.status_code == 201


async def test_each_tenant_signs_its_jobs_webhooks_with_its_own_secret(client, worker) -> None:
    dataset_a = await create_dataset(client)
    with running_receiver() as receiver:
        refused = await client.post(
            "/jobs",
            headers=auth(),
            json={
                "dataset_id": dataset_a["id"],
                "model": "gpt-4o-mini-2024-07-18",
                "webhook_url": receiver.url,
            },
        )
        assert refused.status_code == 409
        assert refused.json()["code"] == "job_secret_missing"

        secret_a = (await client.post("/webhooks/job-secret", headers=auth())).json()["secret"]
        secret_b = (await client.post("/webhooks/job-secret", headers=auth("tenant-b"))).json()[
            "secret"
        ]
        assert secret_a != secret_b
        again = await client.post("/webhooks/job-secret", headers=auth())
        assert again.status_code == 409
        shown = (await client.get("/webhooks/job-secret", headers=auth())).json()
        assert "secret" not in shown

        job = await start_job(client, dataset_a["id"], webhook_url=receiver.url)
        await wait_for_job(client, job["id"], {"succeeded"})
        await wait_for(lambda: len(receiver.requests) >= 1)
    delivered = receiver.requests[0]
    assert Webhook(secret_a).verify(delivered.body, delivered.headers)["data"]["id"] == job["id"]
    # Tenant B's secret (all B knows) cannot make or check tenant A's signatures.
    with pytest.raises(WebhookVerificationError):
        Webhook(secret_b).verify(delivered.body, delivered.headers)


async def test_rotating_the_job_secret_signs_with_both_for_a_while(client, worker) -> None:
    first = (await client.post("/webhooks/job-secret", headers=auth())).json()["secret"]
    rotated = await client.post("/webhooks/job-secret/rotate", headers=auth())
    assert rotated.status_code == 200
    second = rotated.json()["secret"]
    assert rotated.json()["previous_expires_at"] is not None
    dataset = await create_dataset(client)
    with running_receiver() as receiver:
        job = await start_job(client, dataset["id"], webhook_url=receiver.url)
        await wait_for_job(client, job["id"], {"succeeded"})
        await wait_for(lambda: len(receiver.requests) >= 1)
    delivered = receiver.requests[0]
    assert len(delivered.headers["webhook-signature"].split()) == 2
    for secret in (first, second):
        Webhook(secret).verify(delivered.body, delivered.headers)
    missing = await client.post("/webhooks/job-secret/rotate", headers=auth("tenant-b"))
    assert missing.status_code == 404


async def test_a_delivery_the_ssrf_guard_stops_is_a_failed_attempt_with_its_reason(
    client, settings
) -> None:
    """Registered while private targets were allowed, delivered after they were not
    (or after DNS started answering with a private address)."""
    from worker.main import build_worker, close_worker

    endpoint = (
        await client.post(
            "/webhooks", headers=auth(), json={"url": "http://localhost:9/internal-admin"}
        )
    ).json()
    strict = settings.model_copy(update={"webhook_allow_private_networks": False})
    running = build_worker(strict, handle_signals=False, poll_delay=0.05, follow_idle_seconds=0.05)
    task = asyncio.create_task(running.async_run())
    try:
        delivery = await one_attempt(client, endpoint["id"])
    finally:
        await close_worker(running)
        task.cancel()
    attempt = delivery["attempts"][0]
    assert delivery["attempt_count"] == 1 or delivery["state"] == "pending"
    assert attempt["status"] is None
    assert attempt["error"].startswith("not sent: webhook host 'localhost' resolves to")
    # The reason does not map the internal network for the caller.
    assert "127.0.0.1" not in attempt["error"]
    assert "::1" not in attempt["error"]


async def test_an_ssrf_refusal_does_not_echo_the_resolved_address(client, settings) -> None:
    client.app.state.resources.settings = settings.model_copy(
        update={"webhook_allow_private_networks": False}
    )
    response = await client.post(
        "/webhooks", headers=auth(), json={"url": "http://localhost:9/internal-admin"}
    )
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "localhost" in detail
    assert "127.0.0.1" not in detail
    assert "::1" not in detail


async def test_an_idempotent_replay_does_not_hand_out_the_secret_again(
    client, redis_server
) -> None:
    headers = {**auth(), "Idempotency-Key": "create-endpoint-1"}
    body = {"url": "http://127.0.0.1:9/hook"}
    first = await client.post("/webhooks", headers=headers, json=body)
    assert first.status_code == 201
    assert first.json()["secret"].startswith("whsec_")
    replay = await client.post("/webhooks", headers=headers, json=body)
    assert replay.status_code == 201
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json()["id"] == first.json()["id"]
    assert replay.json()["secret"] is None
    with redis_server.client() as redis:
        stored = [redis.get(key) for key in redis.scan_iter("fts:idem:*")]
    assert stored
    assert all("whsec_" not in (value or "") for value in stored)
