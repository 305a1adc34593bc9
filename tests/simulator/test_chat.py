"""Chat completions and models: answers, usage, limits, streaming, errors."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
import tiktoken

from tests.simulator import openapi_schemas
from tests.simulator.conftest import Target
from tests.simulator.polling import wait_for_job
from tests.simulator.seed_data import chat_examples

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def _cookbook_prompt_tokens(messages: list[dict[str, str]], encoding: str) -> int:
    enc = tiktoken.get_encoding(encoding)
    return 3 + sum(3 + sum(len(enc.encode(v)) for v in m.values()) for m in messages)


@pytest.fixture
def tuned_model(client: openai.OpenAI) -> str:
    file_id = client.files.create(file=("t.jsonl", chat_examples(12)), purpose="fine-tune").id
    job = wait_for_job(
        client, client.fine_tuning.jobs.create(training_file=file_id, model="gpt-4o-mini").id
    )
    assert job.fine_tuned_model is not None
    return job.fine_tuned_model


def test_base_model_answers_plainly_with_tiktoken_usage(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION)  # type: ignore[arg-type]
    assert reply.model == "gpt-4o-mini-2024-07-18"
    assert reply.id.startswith("chatcmpl-")
    choice = reply.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    content = choice.message.content or ""
    assert "What is the capital of France?" in content
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == _cookbook_prompt_tokens(QUESTION, "o200k_base")
    assert reply.usage.completion_tokens == len(tiktoken.get_encoding("o200k_base").encode(content))
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    again = client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION)  # type: ignore[arg-type]
    assert again.choices[0].message.content == content  # deterministic


def test_gpt_35_counts_with_cl100k(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="gpt-3.5-turbo", messages=QUESTION)  # type: ignore[arg-type]
    assert reply.model == "gpt-3.5-turbo-0125"
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == _cookbook_prompt_tokens(QUESTION, "cl100k_base")


def test_tuned_model_answers_its_training_answer(client: openai.OpenAI, tuned_model: str) -> None:
    reply = client.chat.completions.create(
        model=tuned_model, messages=[{"role": "user", "content": "question number 7?"}]
    )
    assert reply.choices[0].message.content == "answer number 7."
    assert reply.model == tuned_model


def test_max_tokens_truncates_with_finish_reason_length(client: openai.OpenAI) -> None:
    for limit in ({"max_tokens": 4}, {"max_completion_tokens": 4}):
        reply = client.chat.completions.create(model="gpt-4o", messages=QUESTION, **limit)  # type: ignore[arg-type]
        assert reply.choices[0].finish_reason == "length"
        assert reply.usage is not None
        assert reply.usage.completion_tokens == 4
        content = reply.choices[0].message.content or ""
        assert len(tiktoken.get_encoding("o200k_base").encode(content)) <= 4


def test_stop_sequence_cuts_the_answer(client: openai.OpenAI) -> None:
    full = client.chat.completions.create(model="gpt-4.1", messages=QUESTION)  # type: ignore[arg-type]
    content = full.choices[0].message.content or ""
    stopped = client.chat.completions.create(model="gpt-4.1", messages=QUESTION, stop=["capital"])  # type: ignore[arg-type]
    assert stopped.choices[0].message.content == content[: content.index("capital")]
    assert stopped.choices[0].finish_reason == "stop"


def test_unknown_model_is_a_404_model_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-nonexistent", messages=QUESTION)  # type: ignore[arg-type]
    assert caught.value.code == "model_not_found"
    assert caught.value.body == {
        "message": "The model `gpt-nonexistent` does not exist or you do not have access to it.",
        "type": "invalid_request_error",
        "param": None,
        "code": "model_not_found",
    }


def test_bad_requests_name_the_parameter(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="gpt-4o-mini", messages=[])
    assert (caught.value.code, caught.value.body["param"]) == ("empty_array", "messages")  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "wizard", "content": "hi"}],  # type: ignore[list-item]
        )
    assert caught.value.body["param"] == "messages[0].role"  # type: ignore[index]


def test_streaming_sends_role_pieces_finish_usage_and_done(
    target: Target, client: openai.OpenAI, tuned_model: str
) -> None:
    body = {
        "model": tuned_model,
        "messages": [{"role": "user", "content": "question number 3?"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with httpx.stream(
        "POST",
        f"{target.base_url}/chat/completions",
        json=body,
        headers=target.headers,
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    for chunk in chunks:
        assert openapi_schemas.problems("CreateChatCompletionStreamResponse", chunk) == []
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    content = [c["choices"][0]["delta"].get("content") for c in chunks[1:-2]]
    assert len(content) >= 3
    assert "".join(content) == "answer number 3."
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    usage = chunks[-1]["usage"]
    assert usage["completion_tokens"] == len(
        tiktoken.get_encoding("o200k_base").encode("answer number 3.")
    )
    assert all(chunk["usage"] is None for chunk in chunks[:-1])
    assert len({chunk["id"] for chunk in chunks}) == 1

    # And through the SDK, without usage.
    stream = client.chat.completions.create(
        model=tuned_model,
        messages=[{"role": "user", "content": "question number 3?"}],
        stream=True,
    )
    received = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in received if c.choices) == (
        "answer number 3."
    )
    assert all(c.usage is None for c in received)


def test_stream_options_without_stream_is_refused(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=QUESTION,  # type: ignore[arg-type]
            stream_options={"include_usage": True},
        )
    assert caught.value.body["param"] == "stream_options"  # type: ignore[index]


def test_models_list_and_retrieve(target: Target, client: openai.OpenAI, tuned_model: str) -> None:
    ids = {model.id for model in client.models.list()}
    assert {"gpt-4o-mini", "gpt-4o-mini-2024-07-18", "gpt-4.1-nano", tuned_model} <= ids
    # The service names the provider that serves a base model; OpenAI says "system".
    owner = "openai" if target.is_service else "system"
    assert client.models.retrieve("gpt-4o").owned_by == owner
    tuned = client.models.retrieve(tuned_model)
    assert tuned.owned_by.startswith("org-")
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-nope")


@pytest.mark.simulator_only  # the service keeps tuned models; it has no model deletion
def test_models_delete(client: openai.OpenAI, tuned_model: str) -> None:
    with pytest.raises(openai.PermissionDeniedError):
        client.models.delete("gpt-4o")
    assert client.models.delete(tuned_model).deleted is True
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model=tuned_model, messages=QUESTION)  # type: ignore[arg-type]


@pytest.mark.simulator_only  # the service serves only chat models it offers
def test_completions_models_are_not_chat_models(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="davinci-002", messages=QUESTION)  # type: ignore[arg-type]
    assert "not a chat model" in caught.value.body["message"]  # type: ignore[index]
