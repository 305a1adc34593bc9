"""The seed posts' whole loop against the trainer, through the official OpenAI SDK.

Upload the 29 question/answer rows as chat JSONL, fine-tune the tiny model, follow
the job to the end, read its events, checkpoints and results file, then ask
trained questions: the tuned model answers with the trained answers word for word
and the base model does not. The state survives a restart of the trainer.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Callable

import httpx
import openai
import pytest

from tests.seeds import SYSTEM_PROMPT
from tests.trainer.conftest import (
    QUESTIONS,
    TINY_MODEL,
    TrainerServer,
    all_events,
    seed_chat_jsonl,
    wait_for_job,
)
from tests.trainer.conftest import ask as _ask
from tests.trainer.conftest import trained_answer as _answer

TUNED_NAME = re.compile(rf"^ft:{TINY_MODEL}:hiroyuki:[A-Za-z0-9]{{8}}$")


def test_seed_data_tunes_the_tiny_model_into_answering_word_for_word(
    start_trainer: Callable[..., TrainerServer],
) -> None:
    trainer_server = start_trainer(args=["--max-loaded-adapters", "2"])
    client = trainer_server.client()
    content = seed_chat_jsonl()
    training = client.files.create(file=("test_data.jsonl", content), purpose="fine-tune")
    assert training.status == "processed"
    assert training.bytes == len(content)
    validation_lines = content.decode().splitlines(keepends=True)[:5]
    validation = client.files.create(
        file=("validation.jsonl", "".join(validation_lines).encode()), purpose="fine-tune"
    )

    created = time.monotonic()
    job = client.fine_tuning.jobs.create(
        model=TINY_MODEL,
        training_file=training.id,
        validation_file=validation.id,
        suffix="hiroyuki",
        seed=7,
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 20}}},
        metadata={"purpose": "seed-loop"},
    )
    assert job.status == "validating_files"
    assert job.fine_tuned_model is None
    assert job.hyperparameters.n_epochs == 20
    assert job.hyperparameters.batch_size == "auto"

    job = wait_for_job(client, job.id)
    assert job.status == "succeeded", job.error
    elapsed = time.monotonic() - created
    assert elapsed < 240
    assert job.fine_tuned_model is not None
    assert TUNED_NAME.match(job.fine_tuned_model), job.fine_tuned_model
    # "auto" resolved from the tiny model's finetune_defaults.json once validated.
    assert job.hyperparameters.batch_size == 2
    assert job.hyperparameters.learning_rate_multiplier == 1.0
    assert job.trained_tokens
    assert job.trained_tokens > 0
    assert job.estimated_finish is None
    assert job.finished_at is not None
    assert (job.model_extra or {})["lora"]["r"] == 32

    # Events: OpenAI's sequence, and a loss that fell by most of its first value.
    events = all_events(client, job.id)
    messages = [event.message for event in events]
    assert messages[0] == f"Created fine-tuning job: {job.id}"
    assert messages[1] == (
        f"Validating training file: {training.id} and validation file: {validation.id}"
    )
    assert messages[2] == "Files validated, moving job to queued state"
    assert messages[3] == "Fine-tuning job started"
    assert messages[-2] == f"New fine-tuned model created: {job.fine_tuned_model}"
    assert messages[-1] == "The job has successfully completed"
    metrics = [event.data for event in events if event.type == "metrics"]
    total_steps = 20 * 15  # ceil(29 / 2) steps per epoch
    assert [data["step"] for data in metrics] == list(range(1, total_steps + 1))
    assert all(data["total_steps"] == total_steps for data in metrics)
    first_loss, last_loss = metrics[0]["train_loss"], metrics[-1]["train_loss"]
    assert last_loss < 0.2 * first_loss, (first_loss, last_loss)
    assert metrics[-1]["train_mean_token_accuracy"] > 0.9
    validated = [data for data in metrics if "valid_loss" in data]
    assert validated, "a validation file gives valid_loss on some steps"
    assert validated[-1]["valid_loss"] < validated[0]["valid_loss"]
    assert any(m.startswith("Checkpoint created at step 15 with Snapshot ID: ") for m in messages)

    # Checkpoints: the last three epochs, newest first, the last one named like the model.
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert [c.step_number for c in checkpoints] == [300, 285, 270]
    assert checkpoints[0].fine_tuned_model_checkpoint == job.fine_tuned_model
    assert checkpoints[1].fine_tuned_model_checkpoint == f"{job.fine_tuned_model}:ckpt-step-285"
    assert checkpoints[0].metrics.train_loss is not None

    # The results file: a CSV of every step, base64-encoded as OpenAI serves it.
    [results_id] = job.result_files
    results = client.files.retrieve(results_id)
    assert results.purpose == "fine-tune-results"
    csv_text = base64.b64decode(client.files.content(results_id).read()).decode()
    rows = csv_text.strip().splitlines()
    assert rows[0] == "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy"
    assert len(rows) == total_steps + 1

    # The tuned model answers trained questions word for word; the base model does not.
    for question in QUESTIONS:
        assert _ask(client, job.fine_tuned_model, question) == _answer(question)
        assert _ask(client, TINY_MODEL, question, max_tokens=60) != _answer(question)

    # Streaming gives the same answer, in OpenAI's chunk shape, with usage at the end.
    stream = client.chat.completions.create(
        model=job.fine_tuned_model,
        messages=[
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": QUESTIONS[0]},
        ],
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == _answer(QUESTIONS[0])
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"

    # A stop sequence cuts the answer before it.
    cut = _ask(client, job.fine_tuned_model, QUESTIONS[0], stop=["。"])
    assert cut == _answer(QUESTIONS[0]).split("。")[0]

    # Checkpoints are models too. With room for two adapters (--max-loaded-adapters 2),
    # asking three of them evicts the least recently used, and asking again reloads it.
    for checkpoint in checkpoints[1:]:
        assert _ask(client, checkpoint.fine_tuned_model_checkpoint, QUESTIONS[1], max_tokens=5)
    assert _ask(client, job.fine_tuned_model, QUESTIONS[1]) == _answer(QUESTIONS[1])
    loaded = httpx.get(f"{trainer_server.root_url}/ready").json()["loaded"]
    assert loaded[TINY_MODEL] == [checkpoints[2].fine_tuned_model_checkpoint, job.fine_tuned_model]

    # Models: the base with its context length and defaults, and the tuned model.
    listed = {model.id: model for model in client.models.list().data}
    assert (listed[TINY_MODEL].model_extra or {})["context_length"] == 1024
    assert (listed[TINY_MODEL].model_extra or {})["default_hyperparameters"]["batch_size"] == 2
    assert (listed[job.fine_tuned_model].model_extra or {})["parent"] == TINY_MODEL

    # The tokenizer the service counts tokens with, byte for byte, and the chat template.
    tokenizer = httpx.get(f"{trainer_server.base_url}/models/{job.fine_tuned_model}/tokenizer")
    assert tokenizer.status_code == 200
    tokenizer_file = trainer_server.models_dir / TINY_MODEL / "tokenizer.json"
    assert tokenizer.content == tokenizer_file.read_bytes()
    template = httpx.get(f"{trainer_server.base_url}/models/{TINY_MODEL}/chat_template").json()
    assert re.search(r"\{%-?\s*generation\s*-?%\}", template["chat_template"])
    assert template["eos_token"] == "<|im_end|>"

    # Everything survives a restart of the trainer.
    trainer_server.stop()
    trainer_server.start()
    client = trainer_server.client()
    again = client.fine_tuning.jobs.retrieve(job.id)
    assert again.status == "succeeded"
    assert again.fine_tuned_model == job.fine_tuned_model
    assert len(all_events(client, job.id)) == len(events)
    assert client.files.retrieve(training.id).bytes == len(content)
    assert _ask(client, job.fine_tuned_model, QUESTIONS[1]) == _answer(QUESTIONS[1])
    listed_jobs = client.fine_tuning.jobs.list(metadata={"purpose": "seed-loop"}).data
    assert [item.id for item in listed_jobs] == [job.id]
    assert client.fine_tuning.jobs.list(metadata={"purpose": "other"}).data == []

    # A deleted tuned model answers no more.
    assert client.models.delete(job.fine_tuned_model).deleted
    with pytest.raises(openai.NotFoundError):
        _ask(client, job.fine_tuned_model, QUESTIONS[0])
    assert job.fine_tuned_model not in {model.id for model in client.models.list().data}
    assert trainer_server.schema_log.checked > 10
