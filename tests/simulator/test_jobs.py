"""Fine-tuning jobs: requests, lifecycle, events, checkpoints, results, lists and commands."""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import re
import time

import openai
import pytest
import tiktoken
from openai.types.fine_tuning import FineTuningJobEvent

from tests.simulator.conftest import Target
from tests.simulator.polling import wait_for_job
from tests.simulator.seed_data import chat_examples, hiroyuki_rows

ANSWER = {"role": "assistant", "content": "a"}
QA = {"messages": [{"role": "user", "content": "q"}, ANSWER]}
TUNED = re.compile(r"^ft:gpt-4o-mini-2024-07-18:sim-org:(?P<suffix>[^:]*):[A-Za-z0-9]{8}$")


def _upload(client: openai.OpenAI, content: bytes, name: str = "train.jsonl") -> str:
    return client.files.create(file=(name, content), purpose="fine-tune").id


def _all_events(client: openai.OpenAI, job_id: str) -> list[FineTuningJobEvent]:
    """Every event, oldest first, following the SDK's pagination."""
    events = list(client.fine_tuning.jobs.list_events(job_id, limit=50))
    return events[::-1]


def test_a_successful_job_tells_its_story_in_events(
    target: Target, client: openai.OpenAI, hiroyuki_jsonl: bytes
) -> None:
    file_id = _upload(client, hiroyuki_jsonl)
    job = wait_for_job(
        client, client.fine_tuning.jobs.create(training_file=file_id, model="gpt-4o-mini").id
    )
    assert job.status == "succeeded"
    assert job.fine_tuned_model is not None

    events = _all_events(client, job.id)
    messages = [event.message for event in events if event.type == "message"]
    snapshot = job.fine_tuned_model
    story = [
        "Files validated, moving job to queued state",
        "Fine-tuning job started",
        f"Checkpoint created at step 29 with Snapshot ID: {snapshot}:ckpt-step-29",
        f"Checkpoint created at step 58 with Snapshot ID: {snapshot}:ckpt-step-58",
        f"New fine-tuned model created: {snapshot}",
        "The job has successfully completed",
    ]
    if target.is_service:
        # The provider's story, with the service's own steps around it (its upload of
        # the file, and making the tuned model answer before calling the job done).
        provider = [e.message for e in events if e.id.startswith("ftevent-")]
        assert provider[0].startswith("Created fine-tuning job: ftjob-")
        assert provider[1].startswith("Validating training file: file-")
        assert [m for m in provider if m in story and not m.startswith("Step ")] == story
        assert messages[0] == "Job accepted"
        assert messages[-1] == f"Fine-tuned model ready: {snapshot}"
    else:
        assert all(event.id.startswith("ftevent-") for event in events)
        assert messages == [
            f"Created fine-tuning job: {job.id}",
            f"Validating training file: {file_id}",
            *story,
        ]
    # 29 examples, batch size 1, 3 epochs: one metrics event per step.
    metrics = [event for event in events if event.type == "metrics"]
    assert len(metrics) == 87
    assert [event.data["step"] for event in metrics] == list(range(1, 88))  # type: ignore[index]
    assert metrics[11].message.startswith("Step 12/87: training loss=")
    losses = [event.data["train_loss"] for event in metrics]  # type: ignore[index]
    assert sum(losses[:10]) / 10 > 2 * sum(losses[-10:]) / 10
    assert all("valid_loss" not in event.data for event in metrics)  # type: ignore[operator]
    created = [event.created_at for event in events]
    assert created == sorted(created)


def test_hyperparameters_are_auto_until_validated_then_resolved(
    target: Target, client: openai.OpenAI, hiroyuki_jsonl: bytes
) -> None:
    # The service follows the provider by polling: give it time to see each status.
    target.set_job_seconds(3.0 if target.is_service else 1.0)
    file_id = _upload(client, hiroyuki_jsonl)
    job = client.fine_tuning.jobs.create(training_file=file_id, model="gpt-4o-mini", seed=42)
    assert job.hyperparameters.n_epochs == "auto"
    assert job.method is not None
    assert job.method.type == "supervised"
    assert job.estimated_finish is None
    assert job.trained_tokens is None

    seen = {job.status}
    running = None
    while job.status not in ("succeeded", "failed"):
        job = client.fine_tuning.jobs.retrieve(job.id)
        seen.add(job.status)
        if job.status == "running" and running is None:
            running = job
        time.sleep(0.02)
    if target.is_service:
        # A poll may fall between two statuses; the ones that last are always seen.
        assert {"validating_files", "running", "succeeded"} <= seen
        assert seen <= {"validating_files", "queued", "running", "succeeded"}
    else:
        assert seen == {"validating_files", "queued", "running", "succeeded"}
    assert running is not None
    assert running.estimated_finish is not None
    assert running.estimated_finish >= int(time.time())
    assert running.hyperparameters.n_epochs == 3  # the cookbook's rule for 29 examples
    assert running.hyperparameters.batch_size == 1
    assert running.hyperparameters.learning_rate_multiplier == pytest.approx(1.8)
    assert job.estimated_finish is None
    assert job.seed == 42
    assert job.finished_at is not None


def test_trained_tokens_follow_the_cookbook_count(
    client: openai.OpenAI, hiroyuki_jsonl: bytes
) -> None:
    file_id = _upload(client, hiroyuki_jsonl)
    job = wait_for_job(
        client, client.fine_tuning.jobs.create(training_file=file_id, model="gpt-4o-mini").id
    )
    encoding = tiktoken.get_encoding("o200k_base")
    total = 0
    for line in hiroyuki_jsonl.decode().splitlines():
        tokens = 3
        for message in json.loads(line)["messages"]:
            tokens += 3 + sum(len(encoding.encode(value)) for value in message.values())
        total += tokens
    assert job.trained_tokens == 3 * total


def test_small_files_get_more_epochs_and_explicit_values_are_kept(client: openai.OpenAI) -> None:
    small = _upload(client, chat_examples(12))
    auto = client.fine_tuning.jobs.create(training_file=small, model="gpt-4o-mini")
    explicit = client.fine_tuning.jobs.create(
        training_file=small,
        model="gpt-4o-mini",
        method={
            "type": "supervised",
            "supervised": {"hyperparameters": {"n_epochs": 2, "batch_size": 5}},
        },
    )
    legacy = client.fine_tuning.jobs.create(
        training_file=small, model="gpt-4o-mini", hyperparameters={"n_epochs": 1}
    )
    auto_done = wait_for_job(client, auto.id)
    assert auto_done.hyperparameters.n_epochs == 8  # min(25, 100 // 12)
    explicit_done = wait_for_job(client, explicit.id)
    assert explicit_done.hyperparameters.n_epochs == 2
    assert explicit_done.hyperparameters.batch_size == 5
    steps = [e for e in _all_events(client, explicit.id) if e.type == "metrics"]
    assert len(steps) == math.ceil(12 / 5) * 2
    legacy_done = wait_for_job(client, legacy.id)
    assert legacy_done.method is not None
    assert legacy_done.method.supervised is not None
    assert legacy_done.method.supervised.hyperparameters is not None
    assert legacy_done.method.supervised.hyperparameters.n_epochs == 1
    checkpoints = client.fine_tuning.jobs.checkpoints.list(legacy.id).data
    assert [c.step_number for c in checkpoints] == [12]  # one epoch, one checkpoint


def test_checkpoints_cover_the_last_three_epochs(
    client: openai.OpenAI, hiroyuki_jsonl: bytes
) -> None:
    file_id = _upload(client, hiroyuki_jsonl)
    job = client.fine_tuning.jobs.create(
        training_file=file_id,
        model="gpt-4o-mini",
        suffix="hiro",
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 4}}},
    )
    job = wait_for_job(client, job.id)
    assert job.fine_tuned_model is not None
    match = TUNED.match(job.fine_tuned_model)
    assert match is not None
    assert match["suffix"] == "hiro"
    assert job.user_provided_suffix == "hiro"  # type: ignore[attr-defined]

    page = client.fine_tuning.jobs.checkpoints.list(job.id)
    assert [c.step_number for c in page.data] == [116, 87, 58]  # newest first
    assert all(c.id.startswith("ftckpt_") for c in page.data)
    assert page.data[0].fine_tuned_model_checkpoint == job.fine_tuned_model
    assert page.data[1].fine_tuned_model_checkpoint == f"{job.fine_tuned_model}:ckpt-step-87"
    assert page.data[2].metrics.train_loss is not None

    first = client.fine_tuning.jobs.checkpoints.list(job.id, limit=1)
    assert first.has_more is True
    after = client.fine_tuning.jobs.checkpoints.list(job.id, limit=5, after=first.data[0].id)
    assert [c.step_number for c in after.data] == [87, 58]


@pytest.mark.simulator_only  # the service keeps metrics, not a results file
def test_results_file_is_a_base64_csv_of_every_step(
    client: openai.OpenAI, hiroyuki_jsonl: bytes
) -> None:
    rows = hiroyuki_rows()
    validation = _upload(
        client,
        "".join(
            json.dumps(
                {
                    "messages": [
                        {"role": "user", "content": r["user"] + "?"},
                        {"role": "assistant", "content": r["assistant"]},
                    ]
                },
                ensure_ascii=False,
            )
            + "\n"
            for r in rows[:10]
        ).encode(),
        "valid.jsonl",
    )
    training = _upload(client, hiroyuki_jsonl)
    job = client.fine_tuning.jobs.create(
        training_file=training, validation_file=validation, model="gpt-4o-mini"
    )
    job = wait_for_job(client, job.id)
    assert job.status == "succeeded"
    assert len(job.result_files) == 1
    results = client.files.retrieve(job.result_files[0])
    assert results.purpose == "fine-tune-results"
    raw = client.files.content(results.id).content
    table = list(csv.reader(io.StringIO(base64.b64decode(raw, validate=True).decode())))
    assert table[0] == [
        "step",
        "train_loss",
        "train_accuracy",
        "valid_loss",
        "valid_mean_token_accuracy",
    ]
    assert [row[0] for row in table[1:]] == [str(step) for step in range(1, 88)]
    assert all(row[3] and row[4] for row in table[1:])

    events = _all_events(client, job.id)
    assert events[1].message == (
        f"Validating training file: {training} and validation file: {validation}"
    )
    metrics = [e for e in events if e.type == "metrics"]
    assert ", validation loss=" in metrics[0].message
    assert "valid_loss" in metrics[0].data  # type: ignore[operator]
    assert "full_valid_loss" in metrics[28].data  # type: ignore[operator]  end of epoch 1
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert checkpoints[0].metrics.full_valid_loss is not None


@pytest.mark.simulator_only  # the service keeps metrics, not a results file
def test_results_without_validation_leave_the_validation_columns_blank(
    client: openai.OpenAI,
) -> None:
    job = client.fine_tuning.jobs.create(
        training_file=_upload(client, chat_examples(10)), model="gpt-4o-mini"
    )
    job = wait_for_job(client, job.id)
    decoded = base64.b64decode(client.files.content(job.result_files[0]).content).decode()
    assert decoded.splitlines()[1].endswith(",,")


def test_request_errors_answer_400_with_openai_wording(client: openai.OpenAI) -> None:
    file_id = _upload(client, chat_examples(10))
    with pytest.raises(openai.BadRequestError) as caught:
        client.fine_tuning.jobs.create(training_file=file_id, model="gpt-5-imaginary")
    assert caught.value.body == {
        "message": "Model gpt-5-imaginary is not available for fine-tuning or does not exist.",
        "type": "invalid_request_error",
        "param": "model",
        "code": "model_not_available",
    }
    with pytest.raises(openai.BadRequestError) as caught:
        client.fine_tuning.jobs.create(training_file="file-nope", model="gpt-4o-mini")
    assert caught.value.body == {
        "message": "invalid training_file: file-nope",
        "type": "invalid_request_error",
        "param": "training_file",
        "code": None,
    }
    with pytest.raises(openai.BadRequestError) as caught:
        client.fine_tuning.jobs.create(
            training_file=file_id, validation_file="file-gone", model="gpt-4o-mini"
        )
    assert caught.value.body["param"] == "validation_file"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as caught:
        client.fine_tuning.jobs.create(training_file=file_id, model="gpt-4o-mini", suffix="x" * 65)
    assert caught.value.code == "string_above_max_length"
    with pytest.raises(openai.BadRequestError) as caught:
        client.fine_tuning.jobs.create(
            training_file=file_id,
            model="gpt-4o-mini",
            method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 51}}},
        )
    assert caught.value.body["param"] == "method.supervised.hyperparameters.n_epochs"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as caught:
        client.fine_tuning.jobs.create(
            training_file=file_id, model="gpt-4o-mini", metadata={str(i): "v" for i in range(17)}
        )
    assert caught.value.code == "object_above_max_properties"
    with pytest.raises(openai.BadRequestError) as caught:
        client.fine_tuning.jobs.create(training_file=file_id, model="gpt-4o-mini", seed=-1)
    assert caught.value.body["param"] == "seed"  # type: ignore[index]
    assert client.fine_tuning.jobs.list().data == []


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (
            [
                {
                    "messages": [
                        {"role": "user", "content": "q"},
                        {"role": "assistant", "content": "a"},
                    ]
                },
                {
                    "messages": [
                        {"role": "user", "content": "q"},
                        {"role": "assistant", "content": "a"},
                    ]
                },
                {"messages": [{"role": "user", "content": "q"}, {"content": "a"}]},
            ],
            "The job failed due to an invalid training file. Invalid file format. "
            "Example 3, message 2 Discriminator 'role' is missing in value",
        ),
        (
            [{"prompt": "q", "completion": "a"}],
            "The job failed due to an invalid training file. Unexpected file format, expected "
            "either prompt/completion pairs or chat messages.",
        ),
        (
            [{"messages": [{"role": "user", "content": "q"}]}],
            "The job failed due to an invalid training file. Invalid file format. "
            "Example 1 is missing an assistant message.",
        ),
        (
            [
                {
                    "messages": [
                        {"role": "robot", "content": "q"},
                        {"role": "assistant", "content": "a"},
                    ]
                }
            ],
            "The job failed due to an invalid training file. Invalid file format. Example 1, "
            "message 1 Input tag 'robot' found using 'role' does not match any of the expected "
            "tags: 'system', 'developer', 'user', 'assistant', 'tool', 'function'",
        ),
    ],
)
def test_malformed_examples_fail_the_job_naming_the_example(
    target: Target, client: openai.OpenAI, lines: list[dict[str, object]], message: str
) -> None:
    # Enough good examples after the bad ones that only the format can fail the job.
    content = "".join(json.dumps(line) + "\n" for line in [*lines, *[QA] * 12]).encode()
    file_id = _upload(client, content)
    if target.is_service and "prompt" in lines[0]:
        # The service turns prompt/completion pairs into chat examples, so this trains.
        job = client.fine_tuning.jobs.create(training_file=file_id, model="gpt-4o-mini")
        assert wait_for_job(client, job.id).status == "succeeded"
        return
    if target.is_service:
        # Refused when the job is asked for, naming the first bad line.
        assert client.files.retrieve(file_id).status == "error"
        with pytest.raises(openai.BadRequestError) as refused:
            client.fine_tuning.jobs.create(training_file=file_id, model="gpt-4o-mini")
        assert refused.value.code == "invalid_training_file"
        assert refused.value.param == "training_file"
        assert f"Line {len(lines)}" in refused.value.body["message"]  # type: ignore[index]
        assert client.fine_tuning.jobs.list().data == []
        return
    job = client.fine_tuning.jobs.create(training_file=file_id, model="gpt-4o-mini")
    assert job.status == "validating_files"
    job = wait_for_job(client, job.id)
    assert job.status == "failed"
    assert job.error is not None
    assert (job.error.code, job.error.param) == ("invalid_training_file", "training_file")
    assert job.error.message == message
    assert _all_events(client, job.id)[-1].level == "error"


def test_list_pages_newest_first_and_filters_by_metadata(
    target: Target, client: openai.OpenAI
) -> None:
    file_id = _upload(client, chat_examples(10))
    ids = [
        client.fine_tuning.jobs.create(
            training_file=file_id,
            model="gpt-4o-mini",
            metadata={"caller": "ours" if i % 2 == 0 else "theirs", "n": str(i)},
        ).id
        for i in range(5)
    ]
    client.fine_tuning.jobs.create(training_file=file_id, model="gpt-4o-mini")
    page = client.fine_tuning.jobs.list(limit=2)
    assert page.has_more is True
    assert ids[4] == page.data[1].id
    rest = client.fine_tuning.jobs.list(limit=10, after=page.data[1].id)
    assert [job.id for job in rest.data] == ids[3::-1]
    assert rest.has_more is False

    ours = client.fine_tuning.jobs.list(metadata={"caller": "ours"})
    assert [job.id for job in ours.data] == [ids[4], ids[2], ids[0]]
    both = client.fine_tuning.jobs.list(metadata={"caller": "ours", "n": "2"})
    assert [job.id for job in both.data] == [ids[2]]
    if not target.is_service:
        assert all(job.id.startswith("ftjob-") and len(job.id) == 30 for job in page.data)
    # The SDK's auto-pagination walks every page.
    assert len(list(client.fine_tuning.jobs.list(limit=2))) == 6


def test_cancel_and_cancelling_a_finished_job(target: Target, client: openai.OpenAI) -> None:
    target.set_job_seconds(5)
    file_id = _upload(client, chat_examples(10))
    job = client.fine_tuning.jobs.create(training_file=file_id, model="gpt-4o-mini")
    cancelled = client.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled"
    assert cancelled.finished_at is not None
    assert client.fine_tuning.jobs.retrieve(job.id).status == "cancelled"
    with pytest.raises(openai.BadRequestError) as caught:
        client.fine_tuning.jobs.cancel(job.id)
    if not target.is_service:
        assert caught.value.body["message"] == (  # type: ignore[index]
            f"Job {job.id} has already completed and cannot be cancelled."
        )
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.cancel("ftjob-nope")


def test_pause_stops_the_clock_and_resume_continues(target: Target, client: openai.OpenAI) -> None:
    target.set_job_seconds(3.0 if target.is_service else 1.0)
    file_id = _upload(client, chat_examples(20))
    job = client.fine_tuning.jobs.create(training_file=file_id, model="gpt-4o-mini")
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.resume(job.id)
    wait_for_job(client, job.id, statuses=("running",))
    paused = client.fine_tuning.jobs.pause(job.id)
    assert paused.status == "paused"
    count = len(_all_events(client, job.id))
    time.sleep(0.4)
    assert client.fine_tuning.jobs.retrieve(job.id).status == "paused"
    assert len(_all_events(client, job.id)) == count
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.pause(job.id)

    resumed = client.fine_tuning.jobs.resume(job.id)
    # The service answers once the provider has taken the job back, which may be running.
    assert resumed.status in (("queued", "running") if target.is_service else ("queued",))
    done = wait_for_job(client, job.id)
    assert done.status == "succeeded"
    messages = [event.message for event in _all_events(client, job.id)]
    assert "Fine-tuning job paused" in messages
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.pause(job.id)


def test_unknown_job_is_a_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.fine_tuning.jobs.retrieve("ftjob-doesnotexist")
    assert caught.value.body["message"] == "No such fine-tuning job: ftjob-doesnotexist"  # type: ignore[index]


def test_events_page_with_after_and_limit(target: Target, client: openai.OpenAI) -> None:
    job = wait_for_job(
        client,
        client.fine_tuning.jobs.create(
            training_file=_upload(client, chat_examples(10)), model="gpt-4o-mini"
        ).id,
    )
    first = client.fine_tuning.jobs.list_events(job.id, limit=3)
    assert first.has_more is True
    newest_message = (
        f"Fine-tuned model ready: {job.fine_tuned_model}"
        if target.is_service
        else "The job has successfully completed"
    )
    assert first.data[0].message == newest_message
    following = client.fine_tuning.jobs.list_events(job.id, limit=3, after=first.data[-1].id)
    newest = [e.id for e in _all_events(client, job.id)[::-1]]
    assert [e.id for e in following.data] == newest[3:6]


def test_dpo_jobs_train_on_preference_pairs(client: openai.OpenAI) -> None:
    lines = [
        {
            "input": {"messages": [{"role": "user", "content": f"favourite colour {i}?"}]},
            "preferred_output": [{"role": "assistant", "content": f"blue {i}"}],
            "non_preferred_output": [{"role": "assistant", "content": f"red {i}"}],
        }
        for i in range(10)
    ]
    file_id = _upload(client, "".join(json.dumps(line) + "\n" for line in lines).encode())
    job = client.fine_tuning.jobs.create(
        training_file=file_id, model="gpt-4.1-mini", method={"type": "dpo"}
    )
    assert job.method is not None
    assert job.method.dpo is not None
    job = wait_for_job(client, job.id)
    assert job.status == "succeeded"
    assert job.method is not None
    assert job.method.dpo is not None
    assert job.method.dpo.hyperparameters is not None
    assert job.method.dpo.hyperparameters.beta == pytest.approx(0.1)
    assert job.fine_tuned_model is not None
    reply = client.chat.completions.create(
        model=job.fine_tuned_model, messages=[{"role": "user", "content": "favourite colour 7?"}]
    )
    assert reply.choices[0].message.content == "blue 7"
