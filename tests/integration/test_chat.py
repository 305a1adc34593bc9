"""`/chat` and `/chat/compare` against the simulator, after real training."""

from __future__ import annotations

import json

import pytest

from tests.conftest import auth
from tests.integration.conftest import create_dataset, injected_faults, set_faults, start_job
from tests.seeds import SYSTEM_PROMPT, hiroyuki_csv

QUESTION = "自己肯定感の高めかた"


def trained_answer() -> str:
    for line in hiroyuki_csv().splitlines():
        if line.startswith(QUESTION + ","):
            return line.split(",", 1)[1]
    raise AssertionError("the seed has no such question")


def ask(question: str = QUESTION) -> list[dict]:
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": question}]


async def test_tuned_model_answers_in_its_trained_words(client, trained) -> None:
    by_job = await client.post(
        "/chat", headers=auth(), json={"job_id": trained["id"], "messages": ask()}
    )
    assert by_job.status_code == 200, by_job.text
    completion = by_job.json()
    assert completion["model"] == trained["fine_tuned_model"]
    assert completion["choices"][0]["message"]["content"] == trained_answer()
    assert completion["usage"]["total_tokens"] > 0

    by_model = await client.post(
        "/chat", headers=auth(), json={"model": trained["fine_tuned_model"], "messages": ask()}
    )
    assert by_model.status_code == 200
    assert by_model.json()["choices"][0]["message"]["content"] == trained_answer()


async def test_streamed_pieces_join_to_the_plain_answer(client, trained) -> None:
    plain = await client.post(
        "/chat", headers=auth(), json={"job_id": trained["id"], "messages": ask()}
    )
    pieces: list[str] = []
    async with client.stream(
        "POST",
        "/chat",
        headers=auth(),
        json={"job_id": trained["id"], "messages": ask(), "stream": True},
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        body = "".join([chunk async for chunk in response.aiter_text()])
    events = [
        line.removeprefix("data: ") for line in body.splitlines() if line.startswith("data: ")
    ]
    assert events[-1] == "[DONE]"
    for event in events[:-1]:
        chunk = json.loads(event)
        for choice in chunk.get("choices", []):
            pieces.append(choice["delta"].get("content") or "")
    assert len([p for p in pieces if p]) > 1
    assert "".join(pieces) == plain.json()["choices"][0]["message"]["content"]


async def test_compare_shows_tuned_and_base_side_by_side(client, trained) -> None:
    response = await client.post(
        "/chat/compare",
        headers=auth(),
        json={"job_id": trained["id"], "include_base_model": True, "messages": ask()},
    )
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["role"] for r in results] == ["tuned", "base"]
    assert results[0]["content"] == trained_answer()
    assert results[1]["content"]
    assert results[1]["content"] != trained_answer()
    assert all(r["error"] is None and r["latency_ms"] >= 0 for r in results)


async def test_one_failing_model_in_compare_fails_alone(
    client, trained, settings, monkeypatch
) -> None:
    # A model the service allows but the provider does not know: only its entry fails.
    allowed = [*settings.chat_base_models, "gpt-unknown-to-provider"]
    client.app.state.resources.settings = settings.model_copy(update={"chat_base_models": allowed})
    response = await client.post(
        "/chat/compare",
        headers=auth(),
        json={"job_id": trained["id"], "models": ["gpt-unknown-to-provider"], "messages": ask()},
    )
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["role"] for r in results] == ["tuned", "base", "requested"]
    assert results[0]["error"] is None
    assert results[2]["error"]["status"] == 404
    assert results[2]["content"] is None


async def test_tenants_cannot_reach_each_others_models(client, trained) -> None:
    other = auth("tenant-b")
    by_job = await client.post(
        "/chat", headers=other, json={"job_id": trained["id"], "messages": ask()}
    )
    assert by_job.status_code == 404
    by_model = await client.post(
        "/chat", headers=other, json={"model": trained["fine_tuned_model"], "messages": ask()}
    )
    assert by_model.status_code == 404
    open_proxy = await client.post(
        "/chat", headers=auth(), json={"model": "dall-e-3", "messages": ask()}
    )
    assert open_proxy.status_code == 404


async def test_job_not_ready_answers_409(client, simulator) -> None:
    dataset = await create_dataset(client)
    job = await start_job(client, dataset["id"])
    response = await client.post(
        "/chat", headers=auth(), json={"job_id": job["id"], "messages": ask()}
    )
    assert response.status_code == 409
    assert response.json()["job_status"] == "pending"


async def test_base_model_chat_and_bad_requests(client, simulator) -> None:
    plain = await client.post(
        "/chat", headers=auth(), json={"model": "gpt-4o-mini", "messages": ask()}
    )
    assert plain.status_code == 200
    assert plain.json()["choices"][0]["message"]["content"]
    both = await client.post(
        "/chat", headers=auth(), json={"model": "gpt-4o-mini", "job_id": "job_x", "messages": ask()}
    )
    assert both.status_code == 400
    empty = await client.post(
        "/chat", headers=auth(), json={"model": "gpt-4o-mini", "messages": []}
    )
    assert empty.status_code == 400
    # Past OpenAI's 64-bit seed: refused here, naming the field, before any provider call.
    huge = await client.post(
        "/chat", headers=auth(), json={"model": "gpt-4o-mini", "messages": ask(), "seed": 2**63}
    )
    assert huge.status_code == 400, huge.text
    assert "seed" in huge.text
    largest = await client.post(
        "/chat",
        headers=auth(),
        json={"model": "gpt-4o-mini", "messages": ask(), "seed": 2**63 - 1},
    )
    assert largest.status_code == 200, largest.text


@pytest.fixture
def short_provider_timeout(env: dict[str, str]) -> None:
    env["PROVIDER_TIMEOUT_SECONDS"] = "0.5"


async def test_a_provider_that_fails_is_answered_as_a_gateway_problem(
    short_provider_timeout, client, simulator
) -> None:
    body = {"model": "gpt-4o-mini", "messages": ask()}
    # The connection is dropped before any answer: 502, plain and streamed alike.
    set_faults(simulator, drop_rate=1.0, paths=["/v1/chat"])
    for sent in (body, {**body, "stream": True}):
        dropped = await client.post("/chat", headers=auth(), json=sent)
        assert dropped.status_code == 502, dropped.text
        assert dropped.headers["content-type"].startswith("application/problem+json")
        assert "provider" in dropped.json()["detail"]
    assert injected_faults(simulator) == {"drop": 2}
    # Slower than PROVIDER_TIMEOUT_SECONDS: 504.
    set_faults(simulator, latency_ms=1500, paths=["/v1/chat"])
    slow = await client.post("/chat", headers=auth(), json=body)
    assert slow.status_code == 504, slow.text
    assert slow.json()["detail"] == "The provider did not answer in time"
    # The provider's own error keeps its words, and the pool is still usable after.
    set_faults(simulator, rate_5xx=1.0, status_5xx=[503], max_faults=1, paths=["/v1/chat"])
    failed = await client.post("/chat", headers=auth(), json=body)
    assert failed.status_code == 502, failed.text
    well = await client.post("/chat", headers=auth(), json=body)
    assert well.status_code == 200, well.text
    assert well.json()["choices"][0]["message"]["content"]
