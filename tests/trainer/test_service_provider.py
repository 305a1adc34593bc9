"""The seeds' loop through the service, with the self-hosted trainer as its provider.

Each training of the tiny model costs tens of seconds, so one trained job serves
several checks: chat, comparison and an evaluation against its base.

PROVIDERS_FILE names one provider of kind `trainer`; the service counts the
dataset's tokens with the tiny model's own tokenizer and chat template (learned
from the trainer, no torch in this process), routes the job there, deploys the
adapter, announces `job.succeeded` signed with the tenant's secret, and chats
with the tuned model beside its base.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from tests.conftest import auth
from tests.integration.conftest import wait_for_job
from tests.integration.test_webhooks import wait_for
from tests.receiver import running_receiver
from tests.seeds import SYSTEM_PROMPT, hiroyuki_csv, jsonl
from tests.trainer.conftest import TINY_MODEL, TrainerServer, hiroyuki_rows

pytestmark = pytest.mark.slow

QUESTION = "自己肯定感の高めかた"
EPOCHS = 20


@pytest.fixture
def trainer(start_trainer: Callable[..., TrainerServer]) -> TrainerServer:
    return start_trainer()


@pytest.fixture
def env(env: dict[str, str], trainer: TrainerServer, tmp_path: Path) -> dict[str, str]:
    providers = tmp_path / "providers.toml"
    providers.write_text(
        "[[provider]]\n"
        'name = "local"\n'
        'kind = "trainer"\n'
        f'base_url = "{trainer.base_url}"\n'
        f'models = ["{TINY_MODEL}"]\n'
    )
    overrides = {
        **env,
        "PROVIDERS_FILE": str(providers),
        "POLL_MAX_SECONDS": "0.5",
        # The trainer's built-in server answers one request at a time on CPU: a short
        # queue for the evaluation, and runs long enough for an answer that waited.
        "EVALUATION_CONCURRENCY_PER_PROVIDER": "2",
        "TASK_TIMEOUT_SECONDS": "120",
    }
    overrides.pop("OPENAI_API_KEY", None)
    return overrides


def answer(question: str) -> str:
    return next(row["assistant"] for row in hiroyuki_rows() if row["user"] == question)


async def test_the_seed_loop_trains_on_the_trainer_through_the_service(client, worker) -> None:
    models = (await client.get("/models", headers=auth())).json()["data"]
    tiny = next(m for m in models if m["id"] == TINY_MODEL)
    assert (tiny["provider"], tiny["tokenizer"], tiny["training_open"]) == (
        "local",
        "huggingface",
        True,
    )

    dataset = await client.post(
        "/datasets",
        headers=auth(),
        files={"file": ("hiroyuki.csv", hiroyuki_csv().encode(), "text/csv")},
        data={"system_prompt": SYSTEM_PROMPT, "model": TINY_MODEL},
    )
    assert dataset.status_code == 201, dataset.text
    dataset = dataset.json()
    assert dataset["example_count"] == 29
    assert dataset["token_stats"]["encoding"] == f"{TINY_MODEL} tokenizer.json"

    secret = (await client.post("/webhooks/job-secret", headers=auth())).json()["secret"]
    with running_receiver() as receiver:
        created = await client.post(
            "/jobs",
            headers=auth(),
            json={
                "dataset_id": dataset["id"],
                "model": TINY_MODEL,
                "suffix": "hiroyuki",
                "method": {"type": "supervised", "hyperparameters": {"n_epochs": EPOCHS}},
                "webhook_url": receiver.url,
            },
        )
        assert created.status_code == 202, created.text
        job = await wait_for_job(client, created.json()["id"], {"succeeded"}, timeout=240)
        await wait_for(lambda: len(receiver.requests) >= 1, timeout=30)
    assert job["provider"]["name"] == "local"
    assert job["fine_tuned_model"].startswith(f"ft:{TINY_MODEL}:hiroyuki:")
    # The service counted each example as the trainer trains on it (the chat template's
    # tokens included), so the dataset's count times the epochs is what was trained.
    assert job["trained_tokens"] == dataset["token_count"] * EPOCHS
    delivered = receiver.requests[0]
    payload = Webhook(secret).verify(delivered.body, delivered.headers)
    assert payload["type"] == "job.succeeded"
    assert payload["data"]["fine_tuned_model"] == job["fine_tuned_model"]

    events = (await client.get(f"/jobs/{job['id']}/events?limit=100", headers=auth())).json()
    statuses = [e["data"]["to"] for e in events["data"] if e["type"] == "status"]
    assert "deploying" in statuses
    assert statuses.index("succeeded") < statuses.index("deploying")  # newest first

    messages = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": QUESTION},
    ]
    reply = await client.post(
        "/chat",
        headers=auth(),
        json={"job_id": job["id"], "messages": messages, "temperature": 0, "max_tokens": 200},
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["content"] == answer(QUESTION)

    compared = await client.post(
        "/chat/compare",
        headers=auth(),
        json={"job_id": job["id"], "messages": messages, "temperature": 0, "max_tokens": 200},
    )
    assert compared.status_code == 200, compared.text
    results = {r["role"]: r for r in compared.json()["results"]}
    assert results["tuned"]["content"] == answer(QUESTION)
    assert results["base"]["model"] == TINY_MODEL
    assert results["base"]["content"] != answer(QUESTION)

    # The same comparison with numbers: the tuned model against its base on trained
    # questions. (No validation split, so nothing was evaluated unasked.) Eight of the
    # 29: the trainer's built-in server generates one answer at a time on CPU.
    assert job["evaluation"] is None
    started = await client.post(
        "/evaluations",
        headers=auth(),
        json={
            "dataset_id": dataset["id"],
            "job_id": job["id"],
            "max_tokens": 200,
            "max_examples": 8,
        },
    )
    assert started.status_code == 202, started.text
    done = await wait_for_evaluation(client, started.json()["id"])
    assert done["status"] == "succeeded", done
    assert done["progress"]["done"] == 8
    scores = {m["model"]: m["scores"] for m in done["summary"]["models"]}
    tuned, base = scores[job["fine_tuned_model"]], scores[TINY_MODEL]
    assert tuned["chrf"]["mean"] > base["chrf"]["ci_high"]
    assert tuned["exact_match"]["mean"] > base["exact_match"]["mean"]
    assert done["summary"]["win_rate"]["rate"] > 0.8


async def wait_for_evaluation(client, evaluation_id: str, timeout: float = 600) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = (await client.get(f"/evaluations/{evaluation_id}", headers=auth())).json()
        if found["status"] in ("succeeded", "failed", "cancelled"):
            return dict(found)
        assert asyncio.get_running_loop().time() < deadline, f"still {found['status']}"
        await asyncio.sleep(0.5)


async def test_options_the_trainer_does_not_take_are_refused(client) -> None:
    dataset = await client.post(
        "/datasets",
        headers=auth(),
        files={"file": ("hiroyuki.csv", hiroyuki_csv().encode(), "text/csv")},
        data={"system_prompt": SYSTEM_PROMPT, "model": TINY_MODEL},
    )
    refused = await client.post(
        "/jobs",
        headers=auth(),
        json={
            "dataset_id": dataset.json()["id"],
            "model": TINY_MODEL,
            "provider_options": {"quantization": "4bit"},
        },
    )
    assert refused.status_code == 422
    problem = refused.json()
    assert problem["code"] == "invalid_provider_options"
    assert problem["errors"][0]["path"] == "provider_options.quantization"
    await asyncio.sleep(0)
    assert json.loads(refused.text)["detail"].endswith("it takes: lora")


async def test_openai_sdk_code_trains_and_chats_on_the_trainer_through_v1(
    client, worker, sdk
) -> None:
    """The same SDK calls as against api.openai.com, routed to the self-hosted trainer."""
    api = sdk()
    examples = [
        {
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": row["user"]},
                {"role": "assistant", "content": row["assistant"]},
            ]
        }
        for row in hiroyuki_rows()
    ]
    uploaded = await api.files.create(file=("hiroyuki.jsonl", jsonl(examples)), purpose="fine-tune")
    assert uploaded.status == "processed"
    assert TINY_MODEL in {m.id for m in (await api.models.list()).data}
    created = await api.fine_tuning.jobs.create(
        training_file=uploaded.id,
        model=TINY_MODEL,
        suffix="hiroyuki",
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": EPOCHS}}},
    )
    job = created
    for _ in range(2400):
        job = await api.fine_tuning.jobs.retrieve(created.id)
        if job.status in ("succeeded", "failed", "cancelled"):
            break
        await asyncio.sleep(0.1)
    assert job.status == "succeeded", job.error
    assert job.fine_tuned_model
    assert job.fine_tuned_model.startswith(f"ft:{TINY_MODEL}:hiroyuki:")
    assert job.method is not None
    assert job.method.supervised is not None
    assert job.method.supervised.hyperparameters.n_epochs == EPOCHS
    assert job.fine_tuned_model in {m.id for m in (await api.models.list()).data}

    messages = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": QUESTION},
    ]
    tuned = await api.chat.completions.create(
        model=job.fine_tuned_model, messages=messages, temperature=0, max_tokens=200
    )
    assert tuned.choices[0].message.content == answer(QUESTION)
    streamed = await api.chat.completions.create(
        model=job.fine_tuned_model, messages=messages, temperature=0, max_tokens=200, stream=True
    )
    pieces = [c.choices[0].delta.content or "" async for c in streamed if c.choices]
    assert "".join(pieces) == answer(QUESTION)
    base = await api.chat.completions.create(
        model=TINY_MODEL, messages=messages, temperature=0, max_tokens=200
    )
    assert base.choices[0].message.content != answer(QUESTION)
