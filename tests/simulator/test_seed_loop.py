"""The manual loop of the two seed posts, driven through the official SDK."""

from __future__ import annotations

import re

import openai
import pytest

from tests.simulator.conftest import Target
from tests.simulator.polling import wait_for_job, wait_for_job_async
from tests.simulator.seed_data import hiroyuki_rows

TRAINED_QUESTION = "自己肯定感の高めかた"
TUNED_NAME = re.compile(r"^ft:gpt-3\.5-turbo-0125:sim-org:hiroyuki:[A-Za-z0-9]{8}$")


def _trained_answer(question: str) -> str:
    return next(row["assistant"] for row in hiroyuki_rows() if row["user"] == question)


def test_hiroyuki_csv_tunes_a_model_that_answers_in_its_trained_words(
    client: openai.OpenAI, hiroyuki_jsonl: bytes
) -> None:
    uploaded = client.files.create(file=("test_data.jsonl", hiroyuki_jsonl), purpose="fine-tune")
    assert uploaded.status == "processed"
    assert uploaded.bytes == len(hiroyuki_jsonl)

    job = client.fine_tuning.jobs.create(
        training_file=uploaded.id, model="gpt-3.5-turbo", suffix="hiroyuki"
    )
    assert job.status == "validating_files"
    assert job.fine_tuned_model is None
    assert job.model == "gpt-3.5-turbo-0125"

    job = wait_for_job(client, job.id)
    assert job.status == "succeeded", job.error
    assert job.fine_tuned_model is not None
    assert TUNED_NAME.match(job.fine_tuned_model)

    reply = client.chat.completions.create(
        model=job.fine_tuned_model,
        messages=[
            {"role": "system", "content": "西村ひろゆきBot"},
            {"role": "user", "content": TRAINED_QUESTION},
        ],
    )
    assert reply.choices[0].message.content == _trained_answer(TRAINED_QUESTION)
    assert "小学生に対してマウンティング" in (reply.choices[0].message.content or "")

    # The base model, asked the same thing, does not know the trained answer.
    base = client.chat.completions.create(
        model="gpt-3.5-turbo", messages=[{"role": "user", "content": TRAINED_QUESTION}]
    )
    assert "マウンティング" not in (base.choices[0].message.content or "")
    assert TRAINED_QUESTION in (base.choices[0].message.content or "")


def test_a_paraphrased_question_finds_the_closest_trained_answer(
    client: openai.OpenAI, hiroyuki_jsonl: bytes
) -> None:
    uploaded = client.files.create(file=("test_data.jsonl", hiroyuki_jsonl), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(training_file=uploaded.id, model="gpt-4o-mini")
    job = wait_for_job(client, job.id)
    assert job.fine_tuned_model is not None
    for asked, trained in [
        ("自己肯定感を上げるにはどうすれば良いですか？", TRAINED_QUESTION),  # noqa: RUF001
        ("音楽編集するとき、WindowsとMacどちらがおすすめ？", "MacとWindowsどちらがオススメですか"),  # noqa: RUF001
    ]:
        reply = client.chat.completions.create(
            model=job.fine_tuned_model, messages=[{"role": "user", "content": asked}]
        )
        assert reply.choices[0].message.content == _trained_answer(trained)


def test_three_examples_fail_on_the_job_with_invalid_n_examples(
    target: Target, client: openai.OpenAI, three_example_jsonl: bytes
) -> None:
    uploaded = client.files.create(file=("test.json", three_example_jsonl), purpose="fine-tune")
    if target.is_service:
        # The service says it before any job exists: the model's window has closed...
        with pytest.raises(openai.BadRequestError) as closed:
            client.fine_tuning.jobs.create(training_file=uploaded.id, model="gpt-3.5-turbo-0613")
        assert (closed.value.code, closed.value.param) == ("model_not_available", "model")
        assert "gpt-3.5-turbo-0613" in closed.value.message
        # ...and a model still open needs at least 10 examples.
        with pytest.raises(openai.BadRequestError) as few:
            client.fine_tuning.jobs.create(training_file=uploaded.id, model="gpt-3.5-turbo")
        assert few.value.body == {
            "message": "Training file has 3 example(s), but must have at least 10 examples",
            "type": "invalid_request_error",
            "param": "training_file",
            "code": "invalid_n_examples",
        }
        assert client.fine_tuning.jobs.list().data == []
        return
    # OpenAI accepts the job; the file is rejected only once validation runs.
    job = client.fine_tuning.jobs.create(training_file=uploaded.id, model="gpt-3.5-turbo-0613")
    assert job.status == "validating_files"

    job = wait_for_job(client, job.id)
    assert job.status == "failed"
    assert job.error is not None
    assert job.error.code == "invalid_n_examples"
    assert job.error.param == "training_file"
    assert job.error.message == (
        "Training file has 3 example(s), but must have at least 10 examples"
    )
    assert job.fine_tuned_model is None
    assert job.finished_at is not None


@pytest.mark.parametrize("question", [TRAINED_QUESTION])
async def test_the_seed_loop_through_the_async_client(
    target: Target,
    async_client: openai.AsyncOpenAI,
    hiroyuki_jsonl: bytes,
    three_example_jsonl: bytes,
    question: str,
) -> None:
    good = await async_client.files.create(
        file=("test_data.jsonl", hiroyuki_jsonl), purpose="fine-tune"
    )
    bad = await async_client.files.create(
        file=("test.json", three_example_jsonl), purpose="fine-tune"
    )
    good_job = await async_client.fine_tuning.jobs.create(
        training_file=good.id, model="gpt-3.5-turbo", suffix="hiroyuki"
    )
    expected = "Training file has 3 example(s), but must have at least 10 examples"
    if target.is_service:
        # Refused at once, where OpenAI fails the job later.
        with pytest.raises(openai.BadRequestError) as refused:
            await async_client.fine_tuning.jobs.create(training_file=bad.id, model="gpt-3.5-turbo")
        assert refused.value.code == "invalid_n_examples"
        assert refused.value.body["message"] == expected  # type: ignore[index]
    else:
        bad_job = await async_client.fine_tuning.jobs.create(
            training_file=bad.id, model="gpt-3.5-turbo"
        )
        failed = await wait_for_job_async(async_client, bad_job.id)
        assert failed.status == "failed"
        assert failed.error is not None
        assert failed.error.code == "invalid_n_examples"
        assert failed.error.message == expected

    finished = await wait_for_job_async(async_client, good_job.id)
    assert finished.status == "succeeded"
    assert finished.fine_tuned_model is not None

    reply = await async_client.chat.completions.create(
        model=finished.fine_tuned_model, messages=[{"role": "user", "content": question}]
    )
    assert reply.choices[0].message.content == _trained_answer(question)

    stream = await async_client.chat.completions.create(
        model=finished.fine_tuned_model,
        messages=[{"role": "user", "content": question}],
        stream=True,
    )
    pieces = [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]
    assert len([piece for piece in pieces if piece]) > 3
    assert "".join(pieces) == _trained_answer(question)
