"""Outgoing webhooks: OpenAI's thin events, signed so both verifiers accept them."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import openai
import pytest
import standardwebhooks

from simulator.config import SimulatorConfig
from simulator.testing import running_simulator
from tests.simulator import openapi_schemas
from tests.simulator.polling import wait_for_job
from tests.simulator.seed_data import chat_examples

# What the simulator itself does (faults, restarts, its webhooks): not a conformance test.
pytestmark = pytest.mark.simulator_only

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


@dataclass
class Receiver:
    url: str
    deliveries: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    # Status codes to answer, in order; 200 once they run out.
    answers: list[int] = field(default_factory=list)
    # Seconds each answer takes (a slow receiver).
    delay: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wait_for(self, count: int, timeout: float = 10) -> list[tuple[dict[str, str], bytes]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.deliveries) >= count:
                    return list(self.deliveries)
            time.sleep(0.02)
        raise TimeoutError(f"got {len(self.deliveries)} of {count} webhooks")


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    state = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            time.sleep(state.delay)
            with state.lock:
                state.deliveries.append(({k.lower(): v for k, v in self.headers.items()}, body))
                status = state.answers.pop(0) if state.answers else 200
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    class Server(ThreadingHTTPServer):
        request_queue_size = 512  # a burst of webhooks connects at once

    server = Server(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_port}/hooks"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def hooked(receiver: Receiver) -> Iterator[tuple[openai.OpenAI, Receiver]]:
    receiver.deliveries.clear()
    receiver.answers.clear()
    receiver.delay = 0.0
    config = SimulatorConfig(job_seconds=0.3, webhook_url=receiver.url, webhook_secret=SECRET)
    with (
        running_simulator(config) as base_url,
        openai.OpenAI(base_url=base_url, api_key="k", webhook_secret=SECRET) as client,
    ):
        yield client, receiver


def _job(client: openai.OpenAI, examples: int = 10) -> str:
    file_id = client.files.create(file=("a.jsonl", chat_examples(examples)), purpose="fine-tune").id
    return client.fine_tuning.jobs.create(training_file=file_id, model="gpt-4o-mini").id


def test_succeeded_webhook_verifies_with_openai_and_standardwebhooks(
    hooked: tuple[openai.OpenAI, Receiver],
) -> None:
    client, receiver = hooked
    job_id = _job(client)
    wait_for_job(client, job_id)
    [(headers, body)] = receiver.wait_for(1)

    event = client.webhooks.unwrap(body, headers)
    assert event.type == "fine_tuning.job.succeeded"
    assert event.data.id == job_id  # type: ignore[union-attr]
    assert standardwebhooks.Webhook(SECRET).verify(body, headers)["data"] == {"id": job_id}

    payload = json.loads(body)
    assert payload["object"] == "event"
    assert payload["id"].startswith("evt_")
    assert headers["webhook-id"] == payload["id"]
    assert headers["webhook-signature"].startswith("v1,")
    assert openapi_schemas.problems(openapi_schemas.webhook_schema(payload["type"]), payload) == []

    with pytest.raises(openai.InvalidWebhookSignatureError):
        client.webhooks.unwrap(body + b" ", headers)


def test_failed_and_cancelled_jobs_send_their_webhooks(
    hooked: tuple[openai.OpenAI, Receiver],
) -> None:
    client, receiver = hooked
    failing = _job(client, examples=3)
    cancelled = _job(client)
    client.fine_tuning.jobs.cancel(cancelled)
    wait_for_job(client, failing)
    deliveries = receiver.wait_for(2)
    kinds = {json.loads(body)["data"]["id"]: json.loads(body)["type"] for _, body in deliveries}
    assert kinds == {failing: "fine_tuning.job.failed", cancelled: "fine_tuning.job.cancelled"}
    for headers, body in deliveries:
        client.webhooks.verify_signature(body, headers)
        payload = json.loads(body)
        assert (
            openapi_schemas.problems(openapi_schemas.webhook_schema(payload["type"]), payload) == []
        )


def test_a_refused_delivery_is_retried_with_the_same_id(
    hooked: tuple[openai.OpenAI, Receiver],
) -> None:
    client, receiver = hooked
    receiver.answers.append(503)
    job_id = _job(client)
    wait_for_job(client, job_id)
    deliveries = receiver.wait_for(2)
    assert len({headers["webhook-id"] for headers, _ in deliveries}) == 1
    for headers, body in deliveries:
        standardwebhooks.Webhook(SECRET).verify(body, headers)


async def test_a_burst_larger_than_the_senders_pool_is_delivered_in_one_attempt_each(
    receiver: Receiver,
) -> None:
    """Waiting for its turn to send (the simulator has so many webhooks in flight at
    once) is not a failed attempt: 250 jobs finishing together, a receiver taking
    1.5 s per webhook, 2 s per attempt and a single attempt each, and still every
    webhook arrives."""
    receiver.deliveries.clear()
    receiver.delay = 1.5
    config = SimulatorConfig(
        job_seconds=0.5,
        webhook_url=receiver.url,
        webhook_secret=SECRET,
        webhook_timeout_seconds=2.0,
        webhook_attempts=1,
    )
    try:
        with running_simulator(config) as base_url:
            async with httpx.AsyncClient(
                base_url=base_url, headers={"Authorization": "Bearer k"}, timeout=30
            ) as http:
                uploaded = await http.post(
                    "/files",
                    files={"file": ("a.jsonl", chat_examples(10))},
                    data={"purpose": "fine-tune"},
                )
                body = {"training_file": uploaded.json()["id"], "model": "gpt-4o-mini"}
                gate = asyncio.Semaphore(16)

                async def create() -> None:
                    async with gate:
                        (await http.post("/fine_tuning/jobs", json=body)).raise_for_status()

                await asyncio.gather(*(create() for _ in range(250)))
            deliveries = await asyncio.to_thread(receiver.wait_for, 250, 30)
    finally:
        receiver.delay = 0.0
    assert len({headers["webhook-id"] for headers, _ in deliveries}) == 250
