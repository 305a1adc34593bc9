"""Injected faults, and the SDK's own error classes and retries against them."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.simulator.conftest import Simulator
from tests.simulator.polling import wait_for_job
from tests.simulator.seed_data import chat_examples

# What the simulator itself does (faults, restarts, its webhooks): not a conformance test.
pytestmark = pytest.mark.simulator_only

QUESTION = [{"role": "user", "content": "hello?"}]
KEY = {"Authorization": "Bearer k"}


@pytest.fixture
def retrying_client(simulator: Simulator) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=simulator.base_url, api_key="k", max_retries=2) as sdk:
        yield sdk


def test_429_carries_retry_after_and_becomes_rate_limit_error(
    simulator: Simulator, client: openai.OpenAI
) -> None:
    simulator.set_faults(rate_429=1.0, retry_after=7)
    with pytest.raises(openai.RateLimitError) as caught:
        client.models.list()
    error = caught.value
    assert error.status_code == 429
    assert error.code == "rate_limit_exceeded"
    assert error.type == "requests"
    assert error.response.headers["retry-after"] == "7"
    assert error.body["message"].startswith("Rate limit reached for requests")  # type: ignore[index]
    assert simulator.state()["requests"]["faults"] == {"429": 1}


def test_sdk_retries_through_injected_429s(
    simulator: Simulator, retrying_client: openai.OpenAI
) -> None:
    simulator.set_faults(rate_429=1.0, max_faults=2, retry_after_ms=20)
    started = time.monotonic()
    models = retrying_client.models.list()
    assert models.data
    assert time.monotonic() - started < 1.0  # waited retry-after-ms, not the default backoff
    assert simulator.state()["requests"]["faults"] == {"429": 2}


def test_sdk_honours_retry_after_seconds(
    simulator: Simulator, retrying_client: openai.OpenAI
) -> None:
    simulator.set_faults(rate_429=1.0, max_faults=1, retry_after=1)
    started = time.monotonic()
    retrying_client.models.list()
    assert time.monotonic() - started >= 0.95


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors_become_internal_server_error_and_are_retried(
    simulator: Simulator,
    client: openai.OpenAI,
    retrying_client: openai.OpenAI,
    status: int,
) -> None:
    simulator.set_faults(rate_5xx=1.0, status_5xx=[status], max_faults=1)
    with pytest.raises(openai.InternalServerError) as caught:
        client.files.list()
    assert caught.value.status_code == status
    assert caught.value.type == "server_error"  # type: ignore[attr-defined]

    simulator.set_faults(rate_5xx=1.0, status_5xx=[status], max_faults=2, retry_after_ms=10)
    uploaded = retrying_client.files.create(
        file=("a.jsonl", chat_examples(10)), purpose="fine-tune"
    )
    assert retrying_client.files.retrieve(uploaded.id).id == uploaded.id


def test_dropped_connections_look_like_connection_errors(
    simulator: Simulator, client: openai.OpenAI, retrying_client: openai.OpenAI
) -> None:
    simulator.set_faults(drop_rate=1.0, max_faults=1)
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(f"{simulator.base_url}/models", headers=KEY)

    simulator.set_faults(drop_rate=1.0, max_faults=1)
    with pytest.raises(openai.APIConnectionError):
        client.models.list()

    simulator.set_faults(drop_rate=1.0, max_faults=1)
    reply = retrying_client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION)  # type: ignore[arg-type]
    assert reply.choices
    assert simulator.state()["requests"]["faults"] == {"drop": 3}


def test_latency_is_added(simulator: Simulator, client: openai.OpenAI) -> None:
    simulator.set_faults(latency_ms=250)
    started = time.monotonic()
    client.models.list()
    assert time.monotonic() - started >= 0.25


def test_faults_apply_only_to_the_chosen_paths_and_never_to_sim(
    simulator: Simulator, client: openai.OpenAI
) -> None:
    simulator.set_faults(rate_429=1.0, paths=["/v1/chat"])
    assert client.files.list().data == []
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION)  # type: ignore[arg-type]

    simulator.set_faults(rate_429=1.0, drop_rate=0.0, paths=["/"])
    assert simulator.admin.get("/_sim/state").status_code == 200


def test_fault_config_can_be_patched_read_and_cleared(simulator: Simulator) -> None:
    simulator.set_faults(rate_429=0.5)
    patched = simulator.admin.post("/_sim/faults", json={"latency_ms": 5}).json()
    assert (patched["rate_429"], patched["latency_ms"]) == (0.5, 5)
    bad = simulator.admin.put("/_sim/faults", json={"rate_429": 2})
    assert bad.status_code == 400
    assert bad.json()["error"]["param"] == "rate_429"
    assert simulator.admin.delete("/_sim/faults").json()["rate_429"] == 0.0
    assert simulator.admin.get("/_sim/faults").json()["latency_ms"] == 0


def test_a_job_can_be_made_to_fail_while_running(
    simulator: Simulator, client: openai.OpenAI
) -> None:
    simulator.set_job_seconds(2.0)
    file_id = client.files.create(file=("a.jsonl", chat_examples(10)), purpose="fine-tune").id
    job = client.fine_tuning.jobs.create(training_file=file_id, model="gpt-4o-mini")
    wait_for_job(client, job.id, statuses=("running",))
    answer = simulator.admin.post(
        f"/_sim/jobs/{job.id}/fail", json={"code": "server_error", "message": "GPU melted"}
    )
    assert answer.json()["status"] == "failed"
    failed = client.fine_tuning.jobs.retrieve(job.id)
    assert failed.status == "failed"
    assert failed.error is not None
    assert (failed.error.code, failed.error.message) == ("server_error", "GPU melted")
    assert simulator.admin.post(f"/_sim/jobs/{job.id}/fail").status_code == 409


def test_a_job_marked_to_fail_early_fails_when_it_starts(
    simulator: Simulator, client: openai.OpenAI
) -> None:
    file_id = client.files.create(file=("a.jsonl", chat_examples(10)), purpose="fine-tune").id
    job = client.fine_tuning.jobs.create(training_file=file_id, model="gpt-4o-mini")
    answer = simulator.admin.post(f"/_sim/jobs/{job.id}/fail").json()
    assert answer["fail_pending"] is True
    done = wait_for_job(client, job.id)
    assert done.status == "failed"
    assert done.error is not None
    assert done.error.code == "server_error"
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id)]
    assert "Fine-tuning job started" in messages
    assert "New fine-tuned model created" not in " ".join(messages)


def test_stats_count_jobs_by_metadata(simulator: Simulator, client: openai.OpenAI) -> None:
    file_id = client.files.create(file=("a.jsonl", chat_examples(10)), purpose="fine-tune").id
    for owner in ("job_1", "job_1", "job_2"):
        client.fine_tuning.jobs.create(
            training_file=file_id, model="gpt-4o-mini", metadata={"our_job_id": owner}
        )
    stats = simulator.state()
    assert stats["jobs"]["total"] == 3
    assert stats["jobs"]["by_metadata"] == {"our_job_id": {"job_1": 2, "job_2": 1}}
    assert stats["files"] == 1
    assert simulator.admin.get("/_sim/stats").json()["jobs"]["total"] == 3
    simulator.admin.post("/_sim/reset")
    assert simulator.state()["jobs"]["total"] == 0
