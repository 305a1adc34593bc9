"""The OpenAI-shaped /v1 as the official SDK sees it, beside the native API: the same
tenants, idempotency, rate limits, webhooks and records.

The SDK-driven conformance suite (tests/simulator, target "service") covers the calls
themselves; these tests cover what only the service adds."""

from __future__ import annotations

import asyncio
import json

import openai
import pytest
from standardwebhooks.webhooks import Webhook

from tests.conftest import auth
from tests.integration.test_webhooks import wait_for
from tests.receiver import running_receiver
from tests.seeds import chat_examples, jsonl


async def trained(api: openai.AsyncOpenAI, examples: int = 12, **job: object) -> tuple[str, str]:
    """(file id, job id) of a job that has succeeded."""
    uploaded = await api.files.create(
        file=("t.jsonl", jsonl(chat_examples(examples))), purpose="fine-tune"
    )
    created = await api.fine_tuning.jobs.create(
        training_file=uploaded.id, model="gpt-4o-mini", **job
    )  # type: ignore[arg-type]
    for _ in range(600):
        current = await api.fine_tuning.jobs.retrieve(created.id)
        if current.status in ("succeeded", "failed", "cancelled"):
            assert current.status == "succeeded", current.error
            return uploaded.id, created.id
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {created.id} never finished")


async def test_a_job_made_through_v1_is_the_native_job_and_notifies_the_tenant(
    client, worker, sdk
) -> None:
    api = sdk()
    with running_receiver() as receiver:
        endpoint = await client.post("/webhooks", headers=auth(), json={"url": receiver.url})
        secret = endpoint.json()["secret"]
        file_id, job_id = await trained(api, metadata={"team": "support"})
        await wait_for(lambda: len(receiver.requests) >= 1)

    native = (await client.get(f"/jobs/{job_id}", headers=auth())).json()
    facade = await api.fine_tuning.jobs.retrieve(job_id)
    assert native["dataset_id"] == facade.training_file == file_id
    assert native["fine_tuned_model"] == facade.fine_tuned_model
    assert native["metadata"] == facade.metadata == {"team": "support"}
    dataset = (await client.get(f"/datasets/{file_id}", headers=auth())).json()
    assert (dataset["status"], dataset["example_count"]) == ("ready", 12)

    payload = Webhook(secret).verify(receiver.requests[0].body, receiver.requests[0].headers)
    assert payload["type"] == "job.succeeded"
    assert payload["data"]["id"] == job_id
    assert payload["data"]["fine_tuned_model"] == facade.fine_tuned_model


async def test_another_tenants_file_job_and_model_are_404s_in_openai_shape(
    client, worker, sdk
) -> None:
    owner, other = sdk("tenant-a"), sdk("tenant-b")
    file_id, job_id = await trained(owner)
    model = (await owner.fine_tuning.jobs.retrieve(job_id)).fine_tuned_model
    assert model is not None

    calls = [
        other.files.retrieve(file_id),
        other.files.content(file_id),
        other.files.delete(file_id),
        other.fine_tuning.jobs.retrieve(job_id),
        other.fine_tuning.jobs.cancel(job_id),
        other.fine_tuning.jobs.list_events(job_id),
        other.fine_tuning.jobs.checkpoints.list(job_id),
        other.models.retrieve(model),
        other.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}]),
    ]
    for call in calls:
        with pytest.raises(openai.NotFoundError) as caught:
            await call
        assert set(caught.value.body) == {"message", "type", "param", "code"}  # type: ignore[arg-type]
        assert caught.value.body["type"] == "invalid_request_error"  # type: ignore[index]
    # Training on it is refused the way an unknown file is.
    with pytest.raises(openai.BadRequestError) as refused:
        await other.fine_tuning.jobs.create(training_file=file_id, model="gpt-4o-mini")
    assert refused.value.body == {
        "message": f"invalid training_file: {file_id}",
        "type": "invalid_request_error",
        "param": "training_file",
        "code": None,
    }
    assert (await other.files.list()).data == []
    assert model not in {m.id async for m in other.models.list()}
    # The owner still has everything.
    assert (await owner.files.retrieve(file_id)).status == "processed"


async def test_a_bad_line_is_kept_on_the_file_and_refused_when_a_job_names_it(
    client, worker, sdk
) -> None:
    api = sdk()
    lines = [*chat_examples(11), {"messages": [{"role": "user", "content": "no answer"}]}]
    content = jsonl(lines)
    bad = await api.files.create(file=("bad.jsonl", content), purpose="fine-tune")
    assert bad.status == "error"
    assert bad.status_details is not None
    assert bad.status_details.startswith("Line 12")
    assert (await api.files.content(bad.id)).content == content  # the bytes as sent

    good = await api.files.create(
        file=("good.jsonl", jsonl(chat_examples(12))), purpose="fine-tune"
    )
    with pytest.raises(openai.BadRequestError) as caught:
        await api.fine_tuning.jobs.create(training_file=bad.id, model="gpt-4o-mini")
    assert (caught.value.code, caught.value.param) == ("invalid_training_file", "training_file")
    assert "Line 12" in caught.value.body["message"]  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as caught:
        await api.fine_tuning.jobs.create(
            training_file=good.id, validation_file=bad.id, model="gpt-4o-mini"
        )
    assert (caught.value.code, caught.value.param) == ("invalid_validation_file", "validation_file")
    native = (await client.get(f"/datasets/{bad.id}", headers=auth())).json()
    assert native["status"] == "invalid"
    assert native["errors"][0]["line"] == 12
    assert (await api.fine_tuning.jobs.list()).data == []


async def test_a_closed_model_is_refused_at_creation_naming_the_date(client, sdk) -> None:
    api = sdk()
    uploaded = await api.files.create(
        file=("t.jsonl", jsonl(chat_examples(12))), purpose="fine-tune"
    )
    with pytest.raises(openai.BadRequestError) as caught:
        await api.fine_tuning.jobs.create(training_file=uploaded.id, model="gpt-3.5-turbo-0613")
    assert (caught.value.code, caught.value.param) == ("model_not_available", "model")
    models = (await client.get("/models/gpt-3.5-turbo-0613", headers=auth())).json()
    assert models["training_until"] in caught.value.body["message"]  # type: ignore[index]


async def test_idempotency_key_makes_a_retried_create_one_job(client, sdk) -> None:
    api = sdk()
    uploaded = await api.files.create(
        file=("t.jsonl", jsonl(chat_examples(12))), purpose="fine-tune"
    )
    headers = {"Idempotency-Key": "create-once-1"}
    first = await api.fine_tuning.jobs.create(
        training_file=uploaded.id, model="gpt-4o-mini", extra_headers=headers
    )
    again = await api.fine_tuning.jobs.with_raw_response.create(
        training_file=uploaded.id, model="gpt-4o-mini", extra_headers=headers
    )
    assert again.headers["idempotent-replayed"] == "true"
    assert again.parse().id == first.id
    assert [j.id for j in (await api.fine_tuning.jobs.list()).data] == [first.id]


async def test_bad_requests_name_the_parameter_in_openai_words(client, sdk) -> None:
    api = sdk()
    uploaded = await api.files.create(
        file=("t.jsonl", jsonl(chat_examples(12))), purpose="fine-tune"
    )
    cases = [
        ({"suffix": "x" * 65}, "suffix", "string_above_max_length"),
        ({"seed": -1}, "seed", "integer_below_min_value"),
        (
            {"method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 51}}}},
            "method.supervised.hyperparameters.n_epochs",
            "integer_above_max_value",
        ),
        ({"hyperparameters": {"batch_size": "big"}}, "hyperparameters.batch_size", "invalid_type"),
        ({"integrations": [{"type": "wandb", "wandb": {"project": "p"}}]}, "integrations", None),
    ]
    for extra, param, code in cases:
        with pytest.raises(openai.BadRequestError) as caught:
            await api.fine_tuning.jobs.create(
                training_file=uploaded.id, model="gpt-4o-mini", extra_body=extra
            )
        assert caught.value.param == param, (extra, caught.value.body)
        if code is not None:
            assert caught.value.code == code, (extra, caught.value.body)
    with pytest.raises(openai.BadRequestError) as caught:
        await api.fine_tuning.jobs.create(
            training_file=uploaded.id, model="gpt-4o-mini", extra_body={"colour": "blue"}
        )
    assert caught.value.body["message"] == "Unrecognized request argument supplied: colour"  # type: ignore[index]
    with pytest.raises(openai.AuthenticationError) as caught_auth:
        await sdk(api_key="not-a-key-at-all").models.list()
    assert caught_auth.value.code == "invalid_api_key"
    with pytest.raises(openai.BadRequestError) as caught:
        await api.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], seed=2**63
        )
    assert caught.value.param == "seed", caught.value.body
    assert caught.value.code == "integer_above_max_value"
    raw = await client.post("/v1/fine_tuning/jobs", headers=auth(), content=b"[1, 2")
    assert raw.status_code == 400
    assert set(json.loads(raw.content)["error"]) == {"message", "type", "param", "code"}
