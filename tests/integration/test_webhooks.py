"""Webhooks out (signed, retried, observable) and OpenAI's webhooks in."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from tests.conftest import auth
from tests.integration.conftest import (
    SIMULATOR_WEBHOOK_SECRET,
    create_dataset,
    start_job,
    wait_for_job,
)
from tests.receiver import Received, running_receiver


async def wait_for(predicate, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


def verify(secret: str, request) -> dict:  # type: ignore[no-untyped-def]
    return Webhook(secret).verify(request.body, request.headers)


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Seconds instead of hours between attempts; the schedule's shape is unchanged."""
    from service.webhooks import delivery as webhook_delivery

    monkeypatch.setattr(webhook_delivery, "DELAYS", (0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2))


async def test_job_success_arrives_once_signed_with_the_tuned_model(client, worker) -> None:
    with running_receiver() as receiver:
        endpoint = await client.post("/webhooks", headers=auth(), json={"url": receiver.url})
        assert endpoint.status_code == 201, endpoint.text
        secret = endpoint.json()["secret"]
        assert secret.startswith("whsec_")
        assert (
            "secret"
            not in (await client.get(f"/webhooks/{endpoint.json()['id']}", headers=auth())).json()
        )
        job_secret = await client.post("/webhooks/job-secret", headers=auth())
        assert job_secret.status_code == 201, job_secret.text
        dataset = await create_dataset(client)
        job = await start_job(client, dataset["id"], webhook_url=receiver.url + "?own=1")
        done = await wait_for_job(client, job["id"], {"succeeded"})
        await wait_for(lambda: len(receiver.requests) >= 2)
        await asyncio.sleep(0.5)  # nothing more should arrive
    assert len(receiver.requests) == 2
    own = next(r for r in receiver.requests if "own=1" in r.path)
    subscribed = next(r for r in receiver.requests if "own=1" not in r.path)
    payload = verify(secret, subscribed)
    assert payload["type"] == "job.succeeded"
    assert payload["data"]["fine_tuned_model"] == done["fine_tuned_model"]
    assert payload["data"]["id"] == job["id"]
    assert set(payload) == {"id", "type", "timestamp", "data"}
    own_payload = verify(job_secret.json()["secret"], own)
    assert own_payload["id"] == payload["id"] == subscribed.headers["webhook-id"]


async def test_a_receiver_reading_the_job_on_arrival_finds_the_state_it_was_told(
    client, worker
) -> None:
    base = str(client.base_url)
    seen: list[tuple[str, str]] = []

    def read_back(request: Received) -> None:
        # What a receiver typically does: look the job up the moment it hears of it.
        payload = json.loads(request.body)
        job_id = payload["data"]["id"]
        current = httpx.get(f"{base}/jobs/{job_id}", headers=auth(), timeout=10).json()
        seen.append((payload["type"], current["status"]))

    with running_receiver() as receiver:
        receiver.on_request = read_back
        await client.post(
            "/webhooks",
            headers=auth(),
            json={"url": receiver.url, "event_types": ["job.running", "job.succeeded"]},
        )
        dataset = await create_dataset(client)
        job = await start_job(client, dataset["id"])
        await wait_for_job(client, job["id"], {"succeeded"})
        await wait_for(lambda: len(seen) >= 2)
    assert ("job.succeeded", "succeeded") in seen
    running = [status for kind, status in seen if kind == "job.running"]
    assert running
    assert running[0] in ("running", "deploying", "succeeded")


async def test_endpoints_changed_between_two_jobs_get_the_second_jobs_events(
    client, worker
) -> None:
    """The worker keeps the endpoints it last announced to; an endpoint added since
    gets the next job's success, and one disabled since gets no delivery at all."""
    with running_receiver() as first, running_receiver() as second:
        old = (await client.post("/webhooks", headers=auth(), json={"url": first.url})).json()
        dataset = await create_dataset(client)
        one = await start_job(client, dataset["id"])
        await wait_for_job(client, one["id"], {"succeeded"})
        await wait_for(lambda: len(first.requests) >= 1)

        new = (await client.post("/webhooks", headers=auth(), json={"url": second.url})).json()
        disabled = await client.patch(
            f"/webhooks/{old['id']}", headers=auth(), json={"enabled": False}
        )
        assert disabled.status_code == 200, disabled.text
        two = await start_job(client, dataset["id"])
        await wait_for_job(client, two["id"], {"succeeded"})
        await wait_for(lambda: len(second.requests) >= 1)
        await asyncio.sleep(0.5)  # nothing more should arrive
    assert [verify(old["secret"], r)["data"]["id"] for r in first.requests] == [one["id"]]
    assert [verify(new["secret"], r)["data"]["id"] for r in second.requests] == [two["id"]]
    listed = await client.get(f"/webhooks/{old['id']}/deliveries", headers=auth())
    assert [d["event_type"] for d in listed.json()["data"]] == ["job.succeeded"]


@contextlib.asynccontextmanager
async def sending_process(settings) -> AsyncIterator[tuple[Any, Any]]:  # type: ignore[no-untyped-def]
    """Resources and a LocalSender of their own, as a worker that emits events has."""
    from service.resources import open_resources
    from service.webhooks.delivery import delivery_client
    from service.webhooks.sending import LocalSender

    async with (
        open_resources(settings) as resources,
        delivery_client(allow_private=True) as http,
    ):
        sender = LocalSender(resources, http)
        resources.local_sender = sender
        yield resources, sender


async def emit_test_event(resources, name: str) -> None:  # type: ignore[no-untyped-def]
    from service.webhooks.events import Event, emit_event

    await emit_event(
        resources,
        Event(
            tenant="tenant-a",
            id=f"evt_{name}",
            type="job.succeeded",
            data={"id": f"ftjob-{name}"},
            job_id=None,
        ),
    )


async def test_a_first_attempt_left_by_a_dead_worker_is_sent_after_its_window(
    client, worker, settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker stores a delivery to send itself and dies before sending it: the
    reconciler sends it once the window it had has passed, and only once."""
    from service.webhooks import sending

    monkeypatch.setattr(sending, "SEND_WINDOW_SECONDS", 3.0)
    with running_receiver() as receiver:
        await client.post("/webhooks", headers=auth(), json={"url": receiver.url})
        async with sending_process(settings) as (resources, doomed):
            with doomed.held_sends():
                await emit_test_event(resources, "left_behind")
            stored = time.time()
            await doomed.stop()  # it "dies" before its attempt ran
        await wait_for(lambda: len(receiver.requests) >= 1, timeout=20)
        arrived = time.time()
        await asyncio.sleep(1.0)  # nothing more should arrive
    assert len(receiver.requests) == 1
    assert json.loads(receiver.requests[0].body)["id"] == "evt_left_behind"
    # Not before the window the dead worker had (it might have been sending it).
    assert arrived >= stored + 3.0 - 0.5


async def test_a_burst_for_one_tenant_arrives_whole_within_its_concurrency(
    client, worker, settings
) -> None:
    """Three times as many events at once as a tenant may have attempts in flight:
    each arrives once, and the receiver never has more than that many open."""
    limit = settings.webhook_concurrency_per_tenant
    in_flight, most = 0, 0
    lock = threading.Lock()

    def slow(_: Received) -> None:
        nonlocal in_flight, most
        with lock:
            in_flight += 1
            most = max(most, in_flight)
        time.sleep(0.2)
        with lock:
            in_flight -= 1

    with running_receiver() as receiver:
        receiver.on_request = slow
        await client.post("/webhooks", headers=auth(), json={"url": receiver.url})
        async with sending_process(settings) as (resources, sender):
            with sender.held_sends():
                for n in range(3 * limit):
                    await emit_test_event(resources, f"burst_{n}")
            await wait_for(lambda: len(receiver.requests) >= 3 * limit)
            await sender.stop()
    ids = [json.loads(r.body)["id"] for r in receiver.requests]
    assert sorted(ids) == sorted(f"evt_burst_{n}" for n in range(3 * limit))
    assert 1 < most <= limit


async def test_a_failing_receiver_sees_the_same_webhook_id_again(
    client, worker, fast_retries
) -> None:
    with running_receiver([500, 200]) as receiver:
        endpoint = (
            await client.post("/webhooks", headers=auth(), json={"url": receiver.url})
        ).json()
        test = await client.post(f"/webhooks/{endpoint['id']}/test", headers=auth())
        assert test.status_code == 202
        await wait_for(lambda: len(receiver.requests) >= 2)
    first, second = receiver.requests[:2]
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    verify(endpoint["secret"], second)
    delivery = (
        await client.get(f"/webhooks/deliveries/{test.json()['id']}", headers=auth())
    ).json()
    await wait_for(lambda: True)
    assert [a["status"] for a in delivery["attempts"]][:1] == [500]


async def test_a_receiver_down_for_a_while_gets_everything(client, worker, fast_retries) -> None:
    with running_receiver([503, 503, 503, 200]) as receiver:
        endpoint = (
            await client.post("/webhooks", headers=auth(), json={"url": receiver.url})
        ).json()
        for _ in range(3):
            await client.post(f"/webhooks/{endpoint['id']}/test", headers=auth())
        await wait_for(
            lambda: len({r.headers["webhook-id"] for r in receiver.requests[3:]}) == 3, timeout=30
        )
    for _ in range(100):
        listing = (
            await client.get(
                f"/webhooks/{endpoint['id']}/deliveries?state=succeeded", headers=auth()
            )
        ).json()
        if len(listing["data"]) == 3:
            break
        await asyncio.sleep(0.05)
    assert len(listing["data"]) == 3
    pending = (
        await client.get(f"/webhooks/{endpoint['id']}/deliveries?state=pending", headers=auth())
    ).json()
    assert pending["data"] == []


async def test_410_gone_disables_the_endpoint(client, worker) -> None:
    with running_receiver([410]) as receiver:
        endpoint = (
            await client.post("/webhooks", headers=auth(), json={"url": receiver.url})
        ).json()
        await client.post(f"/webhooks/{endpoint['id']}/test", headers=auth())
        await wait_for(lambda: len(receiver.requests) == 1)
        for _ in range(100):
            current = (await client.get(f"/webhooks/{endpoint['id']}", headers=auth())).json()
            if not current["enabled"]:
                break
            await asyncio.sleep(0.05)
    assert current["enabled"] is False
    assert "410" in current["disabled_reason"]
    again = await client.post(f"/webhooks/{endpoint['id']}/test", headers=auth())
    assert again.status_code == 409


async def test_redirects_are_not_followed(client, worker) -> None:
    with running_receiver([302]) as receiver:
        receiver.extra_headers[302] = {"location": "http://169.254.169.254/latest/meta-data"}
        endpoint = (
            await client.post("/webhooks", headers=auth(), json={"url": receiver.url})
        ).json()
        test = (await client.post(f"/webhooks/{endpoint['id']}/test", headers=auth())).json()
        await wait_for(lambda: len(receiver.requests) == 1)
        for _ in range(100):
            delivery = (
                await client.get(f"/webhooks/deliveries/{test['id']}", headers=auth())
            ).json()
            if delivery["attempts"]:
                break
            await asyncio.sleep(0.05)
    assert delivery["attempts"][0]["status"] == 302
    assert "redirect" in delivery["attempts"][0]["error"]
    assert len(receiver.requests) == 1


async def test_rotation_signs_with_old_and_new_secret(client, worker) -> None:
    with running_receiver() as receiver:
        endpoint = (
            await client.post("/webhooks", headers=auth(), json={"url": receiver.url})
        ).json()
        rotated = await client.post(f"/webhooks/{endpoint['id']}/rotate-secret", headers=auth())
        assert rotated.status_code == 200
        new_secret = rotated.json()["secret"]
        assert new_secret != endpoint["secret"]
        await client.post(f"/webhooks/{endpoint['id']}/test", headers=auth())
        await wait_for(lambda: len(receiver.requests) == 1)
    request = receiver.requests[0]
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    verify(endpoint["secret"], request)
    verify(new_secret, request)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://[::1]/hook",
        "http://10.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://localhost/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://100.64.0.1/hook",
        "ftp://example.com/hook",
        "http://user:pass@example.com/hook",
    ],
)
async def test_private_and_malformed_targets_are_refused(client, settings, url) -> None:
    client.app.state.resources.settings = settings.model_copy(
        update={"webhook_allow_private_networks": False}
    )
    response = await client.post("/webhooks", headers=auth(), json={"url": url})
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "unsafe_webhook_url"


async def test_dns_answer_checked_again_at_connect_time() -> None:
    from service.webhooks.delivery import delivery_client
    from service.webhooks.outbound_guard import UnsafeTarget

    client = delivery_client(allow_private=False)
    try:
        # A name that resolves to loopback, and an address given as it is.
        for url in ("http://localhost:9/hook", "http://127.0.0.1:9/hook", "http://[::1]:9/"):
            with pytest.raises(UnsafeTarget):
                await client.post(url, b"{}", {}, deadline=5)
    finally:
        await client.aclose()


def signed_openai_webhook(upstream_id: str) -> tuple[bytes, dict[str, str]]:
    """A `fine_tuning.job.succeeded` webhook as OpenAI (here: the simulator) signs it."""
    from datetime import UTC, datetime

    body = json.dumps(
        {
            "id": "evt_1",
            "object": "event",
            "type": "fine_tuning.job.succeeded",
            "created_at": int(time.time()),
            "data": {"id": upstream_id},
        }
    ).encode()
    timestamp = int(time.time())
    signer = Webhook(SIMULATOR_WEBHOOK_SECRET)
    signature = signer.sign("msg_1", datetime.fromtimestamp(timestamp, UTC), body.decode())
    return body, {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
    }


async def test_an_openai_webhook_pulls_our_job_forward_and_tells_its_running_step(
    client, settings
) -> None:
    """The job OpenAI's id names is due at once, however long its poll delay, and a
    step already running sees the poke when it writes."""
    from service import tasks
    from service.resources import open_resources
    from service.store.following import Release
    from service.store.jobs import Changes

    dataset = await create_dataset(client)
    job_id = (await start_job(client, dataset["id"]))["id"]  # no worker: it stays pending
    async with open_resources(settings) as resources:
        read = await resources.jobs.read(job_id)
        assert read is not None
        read.job.upstream.job_id = "ftjob-ours"  # as the worker records it
        recorded = await resources.jobs.apply(job_id, read, Changes(job=read.job))
        assert recorded.snapshot is not None
        schedule = resources.following
        now = tasks.now_ms()
        (claim,) = (await schedule.claim(now, now + 30_000, limit=10)).claims
        await schedule.release([Release(job_id, claim.token, now + 3_600_000)], urgent_ms=0)

        body, headers = signed_openai_webhook("ftjob-ours")
        answer = await client.post("/webhooks/openai", content=body, headers=headers)
        assert answer.status_code == 202, answer.text
        assert answer.json()["status"] == "sync_scheduled"
        claimed = await schedule.claim(now, now + 30_000, limit=10)
        assert [c.job_id for c in claimed.claims] == [job_id]
        step = await resources.jobs.apply(
            job_id, recorded.snapshot, Changes(job=recorded.snapshot.job)
        )
        assert step.written
        assert step.poked


async def test_openai_webhook_triggers_a_sync_and_bad_signatures_change_nothing(client) -> None:
    body, headers = signed_openai_webhook("ftjob-unknown")
    good = await client.post("/webhooks/openai", content=body, headers=headers)
    assert good.status_code == 202
    assert good.json()["status"] == "unknown_job"
    bad = await client.post(
        "/webhooks/openai", content=body, headers={**headers, "webhook-signature": "v1,AAAA"}
    )
    assert bad.status_code == 400
    assert bad.json()["code"] == "invalid_signature"


async def test_another_tenants_endpoints_and_deliveries_answer_404(client, worker) -> None:
    with running_receiver() as receiver:
        endpoint = (
            await client.post("/webhooks", headers=auth(), json={"url": receiver.url})
        ).json()
        delivery = (await client.post(f"/webhooks/{endpoint['id']}/test", headers=auth())).json()
        await wait_for(lambda: len(receiver.requests) == 1)
    other = auth("tenant-b")
    for method, path, body in [
        ("GET", f"/webhooks/{endpoint['id']}", None),
        ("PATCH", f"/webhooks/{endpoint['id']}", {"enabled": False}),
        ("DELETE", f"/webhooks/{endpoint['id']}", None),
        ("POST", f"/webhooks/{endpoint['id']}/rotate-secret", None),
        ("POST", f"/webhooks/{endpoint['id']}/test", None),
        ("GET", f"/webhooks/{endpoint['id']}/deliveries", None),
        ("GET", f"/webhooks/deliveries/{delivery['id']}", None),
        ("POST", f"/webhooks/deliveries/{delivery['id']}/retry", None),
    ]:
        response = await client.request(method, path, headers=other, json=body)
        assert response.status_code == 404, (method, path, response.text)
    assert (await client.get("/webhooks", headers=other)).json()["data"] == []
    # And the owner still sees everything unchanged.
    mine = (await client.get(f"/webhooks/{endpoint['id']}", headers=auth())).json()
    assert mine["enabled"] is True
