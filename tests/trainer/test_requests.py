"""Bad input gets OpenAI's status and error body; bad files fail their job with OpenAI's codes."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import openai
import pytest

from tests.seeds import three_examples_jsonl
from tests.trainer.conftest import (
    TINY_MODEL,
    TRAINER_KEY,
    TrainerServer,
    all_events,
    seed_chat_jsonl,
    wait_for_job,
)


def test_three_examples_fail_the_job_with_invalid_n_examples(
    trainer_server: TrainerServer,
) -> None:
    client = trainer_server.client()
    uploaded = client.files.create(
        file=("buta.jsonl", three_examples_jsonl().encode()), purpose="fine-tune"
    )
    # As on OpenAI, the job is accepted and fails while validating its file.
    job = client.fine_tuning.jobs.create(model=TINY_MODEL, training_file=uploaded.id)
    assert job.status == "validating_files"
    job = wait_for_job(client, job.id, timeout=30)
    assert job.status == "failed"
    assert job.error.code == "invalid_n_examples"
    assert job.error.param == "training_file"
    assert job.error.message == (
        "Training file has 3 example(s), but must have at least 10 examples"
    )
    assert job.fine_tuned_model is None
    last = all_events(client, job.id)[-1]
    assert last.level == "error"
    assert last.message == job.error.message


def test_a_bad_line_fails_the_job_naming_the_example(trainer_server: TrainerServer) -> None:
    lines = seed_chat_jsonl().decode().splitlines()
    broken = json.loads(lines[3])
    del broken["messages"][1]["role"]
    lines[3] = json.dumps(broken, ensure_ascii=False)
    client = trainer_server.client()
    uploaded = client.files.create(
        file=("broken.jsonl", ("\n".join(lines) + "\n").encode()), purpose="fine-tune"
    )
    job = client.fine_tuning.jobs.create(model=TINY_MODEL, training_file=uploaded.id)
    job = wait_for_job(client, job.id, timeout=30)
    assert job.status == "failed"
    assert job.error.code == "invalid_training_file"
    assert job.error.param == "training_file"
    assert job.error.message == (
        "The job failed due to an invalid training file. Invalid file format. "
        "Example 4, message 2 Discriminator 'role' is missing in value"
    )


def test_request_errors_answer_400_naming_the_parameter(trainer_server: TrainerServer) -> None:
    client = trainer_server.client()
    uploaded = client.files.create(file=("seed.jsonl", seed_chat_jsonl()), purpose="fine-tune")

    with pytest.raises(openai.BadRequestError) as missing_model:
        client.fine_tuning.jobs.create(model="llama-70b", training_file=uploaded.id)
    assert missing_model.value.status_code == 400
    assert missing_model.value.param == "model"
    assert missing_model.value.code == "model_not_available"
    assert "llama-70b" in missing_model.value.message

    with pytest.raises(openai.BadRequestError) as missing_file:
        client.fine_tuning.jobs.create(model=TINY_MODEL, training_file="file-nope")
    assert missing_file.value.param == "training_file"
    assert missing_file.value.body["message"] == "invalid training_file: file-nope"  # type: ignore[index]

    with pytest.raises(openai.BadRequestError) as epochs:
        client.fine_tuning.jobs.create(
            model=TINY_MODEL,
            training_file=uploaded.id,
            method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 99}}},
        )
    assert epochs.value.param == "method.supervised.hyperparameters.n_epochs"
    assert epochs.value.code == "integer_above_max_value"

    with pytest.raises(openai.BadRequestError) as lora:
        client.fine_tuning.jobs.create(
            model=TINY_MODEL, training_file=uploaded.id, extra_body={"lora": {"r": 0}}
        )
    assert lora.value.param == "lora.r"

    with pytest.raises(openai.BadRequestError) as lora_key:
        client.fine_tuning.jobs.create(
            model=TINY_MODEL, training_file=uploaded.id, extra_body={"lora": {"rank": 8}}
        )
    assert lora_key.value.param == "lora.rank"
    assert lora_key.value.code == "unknown_parameter"

    with pytest.raises(openai.BadRequestError) as dpo:
        client.fine_tuning.jobs.create(
            model=TINY_MODEL, training_file=uploaded.id, method={"type": "dpo"}
        )
    assert dpo.value.param == "method.type"

    with pytest.raises(openai.BadRequestError) as not_jsonl:
        client.files.create(file=("data.csv", b"user,assistant\nhi,hello\n"), purpose="fine-tune")
    assert "Line 1 is not a dictionary" in not_jsonl.value.message

    with pytest.raises(openai.NotFoundError) as chat_model:
        client.chat.completions.create(
            model="ft:tiny-chat::nothere1", messages=[{"role": "user", "content": "hi"}]
        )
    assert chat_model.value.code == "model_not_found"

    with pytest.raises(openai.BadRequestError) as temperature:
        client.chat.completions.create(
            model=TINY_MODEL, messages=[{"role": "user", "content": "hi"}], temperature=3
        )
    assert temperature.value.param == "temperature"

    # A job's own LoRA settings are accepted and shown back on the job.
    job = client.fine_tuning.jobs.create(
        model=TINY_MODEL,
        training_file=uploaded.id,
        extra_body={"lora": {"r": 8, "alpha": 16, "target_modules": ["q_proj", "v_proj"]}},
    )
    lora_shown = (job.model_extra or {})["lora"]
    assert lora_shown == {
        "r": 8,
        "alpha": 16,
        "dropout": "auto",
        "target_modules": ["q_proj", "v_proj"],
    }
    cancelled = client.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled"
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.cancel(job.id)

    # The older top-level `hyperparameters` form is accepted too.
    legacy = client.fine_tuning.jobs.create(
        model=TINY_MODEL, training_file=uploaded.id, hyperparameters={"n_epochs": 2}
    )
    assert legacy.hyperparameters.n_epochs == 2
    assert legacy.method is not None
    assert legacy.method.type == "supervised"
    client.fine_tuning.jobs.cancel(legacy.id)


def test_unknown_ids_answer_404_in_openai_shape(trainer_server: TrainerServer) -> None:
    client = trainer_server.client()
    with pytest.raises(openai.NotFoundError) as file_error:
        client.files.retrieve("file-doesnotexist")
    assert file_error.value.body == {  # type: ignore[comparison-overlap]
        "message": "No such File object: file-doesnotexist",
        "type": "invalid_request_error",
        "param": "id",
        "code": None,
    }
    with pytest.raises(openai.NotFoundError):
        client.files.content("file-doesnotexist")
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.retrieve("ftjob-doesnotexist")
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")
    unknown = httpx.get(f"{trainer_server.base_url}/no/such/path")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["message"] == "Invalid URL (GET /v1/no/such/path)"

    uploaded = client.files.create(file=("seed.jsonl", seed_chat_jsonl()), purpose="fine-tune")
    assert [f.id for f in client.files.list().data] == [uploaded.id]
    assert client.files.content(uploaded.id).read() == seed_chat_jsonl()
    assert client.files.delete(uploaded.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.files.delete(uploaded.id)


def test_trainer_api_key_is_required_when_set(
    start_trainer: Callable[..., TrainerServer],
) -> None:
    server = start_trainer(env={"TRAINER_API_KEY": TRAINER_KEY})
    with pytest.raises(openai.AuthenticationError) as wrong:
        server.client(api_key="not-the-key").models.list()
    assert wrong.value.status_code == 401
    assert wrong.value.code == "invalid_api_key"
    no_key = httpx.get(f"{server.base_url}/models")
    assert no_key.status_code == 401
    assert set(no_key.json()["error"]) == {"message", "type", "param", "code"}
    assert [m.id for m in server.client(api_key=TRAINER_KEY).models.list().data] == [TINY_MODEL]
    # Health and readiness stay open for probes.
    assert httpx.get(f"{server.root_url}/health").status_code == 200
    ready = httpx.get(f"{server.root_url}/ready")
    assert ready.status_code == 200
    assert ready.json()["models"] == [TINY_MODEL]
