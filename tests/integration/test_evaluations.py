"""Evaluations against the simulator, whose tuned model recalls its training answers:
scores, rows, the picture, refusals, tenants, idempotency, cancel, flaky providers,
and the evaluation a job starts when it succeeds (with its webhook)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from tests.conftest import auth
from tests.integration.conftest import (
    create_dataset,
    injected_faults,
    set_faults,
    start_job,
    wait_for_job,
)
from tests.receiver import running_receiver
from tests.seeds import chat_examples, jsonl


async def wait_for_evaluation(
    client, evaluation_id: str, statuses: set[str], *, tenant: str = "tenant-a", timeout: float = 60
) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        response = await client.get(f"/evaluations/{evaluation_id}", headers=auth(tenant))
        assert response.status_code == 200, response.text
        found = response.json()
        if found["status"] in statuses:
            return found
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"evaluation stayed {found['status']}: {found}")
        await asyncio.sleep(0.1)


async def all_rows(client, evaluation_id: str, *, limit: int = 7) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    rows: list[dict[str, Any]] = []
    after = None
    while True:
        query = f"?limit={limit}" + (f"&after={after}" if after is not None else "")
        page = await client.get(f"/evaluations/{evaluation_id}/results{query}", headers=auth())
        assert page.status_code == 200, page.text
        body = page.json()
        rows += body["data"]
        if not body["has_more"]:
            return rows
        after = body["data"][-1]["index"]


def scores_of(evaluation: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["model"]: m["scores"] for m in evaluation["summary"]["models"]}


async def evaluate_job(client, trained: dict[str, Any], **extra: Any) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    response = await client.post(
        "/evaluations",
        headers=auth(),
        json={"dataset_id": trained["dataset_id"], "job_id": trained["id"], **extra},
    )
    assert response.status_code == 202, response.text
    assert response.headers["location"].endswith(f"/evaluations/{response.json()['id']}")
    return response.json()


async def test_the_tuned_model_beats_its_base_on_its_own_training_questions(
    client, worker, trained
) -> None:
    created = await evaluate_job(client, trained)
    assert created["status"] == "queued"
    assert [m["role"] for m in created["models"]] == ["tuned", "base"]
    tuned, base = (m["model"] for m in created["models"])
    assert tuned == trained["fine_tuned_model"]

    done = await wait_for_evaluation(client, created["id"], {"succeeded"})
    assert done["progress"]["done"] == done["progress"]["total"] == 29
    scores = scores_of(done)
    assert scores[tuned]["exact_match"]["mean"] == 1.0
    assert scores[base]["exact_match"]["mean"] == 0.0
    assert scores[tuned]["chrf"]["mean"] > 90
    assert scores[base]["chrf"]["mean"] < 40
    # The intervals do not overlap: the difference is not noise.
    assert scores[base]["chrf"]["ci_high"] < scores[tuned]["chrf"]["ci_low"]
    assert scores[tuned]["chrf"]["ci_low"] <= scores[tuned]["chrf"]["mean"]
    win = done["summary"]["win_rate"]
    assert (win["model"], win["over"], win["metric"]) == (tuned, base, "chrf")
    assert win["rate"] >= 0.95
    assert win["compared"] == 29
    cost = done["summary"]["cost"]
    assert cost["total_tokens"] == cost["prompt_tokens"] + cost["completion_tokens"] > 0

    rows = await all_rows(client, created["id"])
    assert [row["index"] for row in rows] == list(range(29))
    for row in rows:
        assert row["prompt"][-1]["role"] == "user"
        answers = {answer["model"]: answer for answer in row["answers"]}
        assert set(answers) == {tuned, base}
        assert answers[tuned]["content"] == row["reference"]
        assert answers[tuned]["scores"]["exact_match"] == 1.0
        assert answers[base]["content"].startswith("You asked")
        assert answers[base]["scores"]["chrf"] < answers[tuned]["scores"]["chrf"]

    chart = await client.get(f"/evaluations/{created['id']}/chart.svg", headers=auth())
    assert chart.status_code == 200
    assert chart.headers["content-type"].startswith("image/svg+xml")
    assert tuned in chart.text
    assert "chrF" in chart.text

    listed = (await client.get(f"/evaluations?job_id={trained['id']}", headers=auth())).json()
    assert [e["id"] for e in listed["data"]] == [created["id"]]


async def test_bad_requests_are_problems_that_say_what_is_wrong(client, worker, trained) -> None:
    dataset_id = trained["dataset_id"]

    async def refused(body: dict[str, Any], status: int, tenant: str = "tenant-a") -> str:
        response = await client.post("/evaluations", headers=auth(tenant), json=body)
        assert response.status_code == status, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        return str(response.json()["detail"])

    both = {"dataset_id": dataset_id, "job_id": trained["id"], "models": ["gpt-4o-mini"]}
    assert "not both" in await refused(both, 400)
    assert "models" in await refused({"dataset_id": dataset_id, "models": []}, 400)
    assert "metrics" in await refused(
        {"dataset_id": dataset_id, "job_id": trained["id"], "metrics": ["bleu"]}, 400
    )
    assert "ds_nothing" in await refused({"dataset_id": "ds_nothing", "models": ["gpt-4o"]}, 404)
    assert "max_examples" in await refused(
        {"dataset_id": dataset_id, "job_id": trained["id"], "max_examples": 10**6}, 422
    )
    assert "grader" in await refused(
        {"dataset_id": dataset_id, "job_id": trained["id"], "metrics": ["grader"]}, 422
    )
    assert "more than once" in await refused(
        {"dataset_id": dataset_id, "models": ["gpt-4o-mini", "gpt-4o-mini"]}, 422
    )
    assert "not available" in await refused(
        {"dataset_id": dataset_id, "models": ["no-such-model"]}, 404
    )
    # Another tenant's tuned model, and its job, are 404s, as for chat.
    other = await create_dataset(client, tenant="tenant-b")
    assert "not available" in await refused(
        {"dataset_id": other["id"], "models": [trained["fine_tuned_model"]]}, 404, "tenant-b"
    )
    assert trained["id"] in await refused(
        {"dataset_id": other["id"], "job_id": trained["id"]}, 404, "tenant-b"
    )
    assert "grader" in await refused(
        {
            "dataset_id": other["id"],
            "models": ["gpt-4o-mini"],
            "grader": {"model": trained["fine_tuned_model"]},
        },
        404,
        "tenant-b",
    )

    created = await evaluate_job(client, trained, max_examples=3)
    for path in ("", "/results", "/chart.svg"):
        peek = await client.get(f"/evaluations/{created['id']}{path}", headers=auth("tenant-b"))
        assert peek.status_code == 404
    bad_cursor = await client.get(f"/evaluations/{created['id']}/results?after=x", headers=auth())
    assert bad_cursor.status_code == 400
    assert "after" in bad_cursor.json()["detail"]
    done = await wait_for_evaluation(client, created["id"], {"succeeded"})
    assert done["progress"]["total"] == 3
    again = await client.post(f"/evaluations/{created['id']}/cancel", headers=auth())
    assert again.status_code == 409


async def test_an_idempotency_key_makes_one_evaluation(client) -> None:
    dataset = await create_dataset(client)
    body = {"dataset_id": dataset["id"], "models": ["gpt-4o-mini", "gpt-4.1-mini"]}
    headers = {**auth(), "Idempotency-Key": "eval-once"}
    first = await client.post("/evaluations", headers=headers, json=body)
    second = await client.post("/evaluations", headers=headers, json=body)
    assert first.status_code == second.status_code == 202
    assert second.headers["idempotent-replayed"] == "true"
    assert first.json()["id"] == second.json()["id"]
    listed = (await client.get("/evaluations", headers=auth())).json()
    assert len(listed["data"]) == 1
    changed = await client.post(
        "/evaluations", headers=headers, json={**body, "models": ["gpt-4o-mini"]}
    )
    assert changed.status_code == 422


async def test_a_queued_evaluation_cancels_at_once(client) -> None:
    dataset = await create_dataset(client)
    created = (
        await client.post(
            "/evaluations",
            headers=auth(),
            json={"dataset_id": dataset["id"], "models": ["gpt-4o-mini", "gpt-4.1-mini"]},
        )
    ).json()
    cancelled = await client.post(f"/evaluations/{created['id']}/cancel", headers=auth())
    assert cancelled.status_code == 202
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["cancel_requested"] is True
    again = await client.post(f"/evaluations/{created['id']}/cancel", headers=auth())
    assert again.status_code == 409


@pytest.fixture
def one_call_at_a_time(env: dict[str, str]) -> None:
    env["EVALUATION_CONCURRENCY_PER_PROVIDER"] = "1"


async def test_a_running_evaluation_stops_when_cancelled(
    one_call_at_a_time, client, worker, simulator
) -> None:
    dataset = await create_dataset(client)
    set_faults(simulator, latency_ms=1500, paths=["/v1/chat"])
    created = (
        await client.post(
            "/evaluations",
            headers=auth(),
            json={"dataset_id": dataset["id"], "models": ["gpt-4o-mini", "gpt-4.1-mini"]},
        )
    ).json()
    await wait_for_evaluation(client, created["id"], {"running"})
    cancelled = await client.post(f"/evaluations/{created['id']}/cancel", headers=auth())
    assert cancelled.status_code == 202
    assert cancelled.json()["cancel_requested"] is True
    done = await wait_for_evaluation(client, created["id"], {"cancelled"})
    assert done["progress"]["done"] < done["progress"]["total"]


async def test_a_provider_failing_30_percent_of_chats_still_scores_every_row(
    client, worker, trained, simulator
) -> None:
    # Training is over; from here 15% of chat calls answer 429 and 15% answer 500.
    set_faults(
        simulator,
        rate_429=0.15,
        rate_5xx=0.15,
        status_5xx=[500],
        retry_after_ms=20,
        paths=["/v1/chat"],
        seed=19,
    )
    created = await evaluate_job(client, trained)
    done = await wait_for_evaluation(client, created["id"], {"succeeded"}, timeout=120)
    faults = injected_faults(simulator)
    assert faults.get("429", 0) > 0
    assert faults.get("5xx", 0) > 0
    tuned = trained["fine_tuned_model"]
    rows = await all_rows(client, created["id"], limit=100)
    assert len(rows) == done["progress"]["total"] == 29
    for row in rows:
        assert len(row["answers"]) == 2
        for answer in row["answers"]:
            assert answer["error"] is None
            assert answer["content"]
            assert answer["scores"]["chrf"] is not None
    summary = {m["model"]: m for m in done["summary"]["models"]}
    assert all(m["errors"] == 0 and m["answered"] == 29 for m in summary.values())
    assert summary[tuned]["scores"]["exact_match"]["mean"] == 1.0


@pytest.fixture
def no_webhook_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    from service.webhooks import delivery as webhook_delivery

    monkeypatch.setattr(webhook_delivery, "DELAYS", (0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2))


async def test_a_split_dataset_is_evaluated_when_its_job_succeeds(
    client, worker, no_webhook_waits
) -> None:
    examples = [
        {
            "messages": [
                {"role": "system", "content": "Answer with the capital."},
                {"role": "user", "content": f"What is the capital of country number {i}?"},
                {"role": "assistant", "content": f"City {i} is the capital."},
            ]
        }
        for i in range(40)
    ]
    with running_receiver() as receiver:
        endpoint = await client.post(
            "/webhooks",
            headers=auth(),
            json={"url": receiver.url, "event_types": ["job.succeeded", "evaluation.completed"]},
        )
        assert endpoint.status_code == 201, endpoint.text
        secret = endpoint.json()["secret"]
        response = await client.post(
            "/datasets",
            headers=auth(),
            files={"file": ("capitals.jsonl", jsonl(examples), "application/jsonl")},
            data={"validation_fraction": "0.2", "seed": "3"},
        )
        assert response.status_code == 201, response.text
        training = response.json()
        held_out = training["validation_dataset_id"]
        assert training["example_count"] == 32
        job = await start_job(client, training["id"])
        succeeded = await wait_for_job(client, job["id"], {"succeeded"})
        evaluation_id = succeeded["evaluation"]["id"]

        def arrived(kind: str) -> list[dict[str, Any]]:
            payloads = [Webhook(secret).verify(r.body, r.headers) for r in receiver.requests]
            return [p for p in payloads if p["type"] == kind]

        deadline = asyncio.get_running_loop().time() + 60
        while not arrived("evaluation.completed"):
            assert asyncio.get_running_loop().time() < deadline, "no evaluation.completed"
            await asyncio.sleep(0.1)
        job_event = arrived("job.succeeded")[0]
        completed = arrived("evaluation.completed")[0]

    # job.succeeded did not wait for the evaluation; it names it.
    assert job_event["data"]["evaluation"]["id"] == evaluation_id
    data = completed["data"]
    assert data["id"] == evaluation_id
    assert data["status"] == "succeeded"
    assert (data["job_id"], data["dataset_id"], data["origin"]) == (job["id"], held_out, "job")
    assert data["progress"] == {"done": 8, "total": 8, "percent": 100.0}
    tuned = succeeded["fine_tuned_model"]
    assert [m["model"] for m in data["summary"]["models"]] == [tuned, "gpt-4o-mini-2024-07-18"]
    assert data["summary"]["win_rate"]["model"] == tuned
    for model in data["summary"]["models"]:
        assert model["answered"] == 8
        assert model["scores"]["chrf"]["n"] == 8

    shown = (await client.get(f"/jobs/{job['id']}", headers=auth())).json()
    assert shown["evaluation"]["status"] == "succeeded"
    assert shown["evaluation"]["summary"] == data["summary"]


async def test_a_job_without_held_out_examples_starts_no_evaluation(client, worker) -> None:
    response = await client.post(
        "/datasets",
        headers=auth(),
        files={"file": ("plain.jsonl", jsonl(chat_examples(12)), "application/jsonl")},
    )
    job = await start_job(client, response.json()["id"])
    succeeded = await wait_for_job(client, job["id"], {"succeeded"})
    assert succeeded["evaluation"] is None
    assert (await client.get("/evaluations", headers=auth())).json()["data"] == []


async def test_a_grader_model_scores_each_answer_with_a_reason(client, worker, trained) -> None:
    created = await evaluate_job(
        client,
        trained,
        metrics=["chrf"],
        max_examples=5,
        grader={"model": "gpt-4o-mini", "rubric": "5: same meaning as the reference; 1: unrelated"},
    )
    assert created["metrics"] == ["chrf", "grader"]
    assert created["grader"]["model"] == "gpt-4o-mini"
    done = await wait_for_evaluation(client, created["id"], {"succeeded"})
    for model in done["summary"]["models"]:
        grades = model["scores"]["grader"]
        assert grades["n"] == 5
        assert 1 <= grades["ci_low"] <= grades["mean"] <= grades["ci_high"] <= 5
        assert "exact_match" not in model["scores"]
    assert done["summary"]["win_rate"]["metric"] == "grader"
    assert done["summary"]["cost"]["grader_tokens"] > 0
    for row in await all_rows(client, created["id"]):
        for answer in row["answers"]:
            assert answer["scores"]["grader"] in {1, 2, 3, 4, 5}
            assert answer["grader_reason"]
            assert answer["grader_error"] is None
