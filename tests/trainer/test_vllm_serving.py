"""The trainer with VLLM_BASE_URL set: tuned models are served through vLLM.

vLLM cannot run on these CPUs, so a stand-in answers at the HTTP boundary
(tests/trainer/vllm_standin.py), recording every call. Shown: a job's adapter is
loaded into vLLM by its folder once the job succeeds; the trainer's deploy call
answers 200 only once the model has answered there; chat is forwarded as raw
bytes, streamed chunk by chunk; a vLLM restart is noticed by a chat or a deploy
(404 "does not exist") and by the periodic check without any call, and the
adapter is loaded again; deleting the model unloads it; and an unreachable vLLM
is an OpenAI-shaped 503. The job is the same request the
local and Ray tests send, trained by the local runner.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.seeds import SYSTEM_PROMPT
from tests.trainer.conftest import (
    QUESTIONS,
    TINY_MODEL,
    TrainerServer,
    create_seed_job,
    wait_for_job,
)
from tests.trainer.vllm_standin import VLLMStandIn

pytestmark = pytest.mark.slow

VLLM_KEY = "vllm-admin-key-for-tests"
LOAD, UNLOAD, CHAT = "/v1/load_lora_adapter", "/v1/unload_lora_adapter", "/v1/chat/completions"


@pytest.fixture
def standin() -> Iterator[VLLMStandIn]:
    server = VLLMStandIn(base_model=TINY_MODEL, api_key=VLLM_KEY)
    server.start()
    yield server
    server.stop()


def _messages(question: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": question}]


def _wait(condition: Callable[[], bool], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.1)


def test_tuned_models_are_served_through_vllm(
    start_trainer: Callable[..., TrainerServer], standin: VLLMStandIn
) -> None:
    # A long check interval: here only chat notices a vLLM restart.
    server = start_trainer(
        env={"VLLM_BASE_URL": f"{standin.url}/v1", "VLLM_API_KEY": VLLM_KEY},
        args=["--vllm-check-seconds", "3600"],
    )
    client = server.client()
    job = wait_for_job(client, create_seed_job(client, n_epochs=1).id)
    assert job.status == "succeeded", job.error
    tuned = job.fine_tuned_model
    adapter = (server.data_dir / "jobs" / job.id / "run" / "adapter").resolve()

    # Trained, the adapter is loaded into vLLM by its folder.
    _wait(lambda: tuned in standin.adapters, "the adapter was not loaded after training")
    assert standin.posts() == [(LOAD, tuned, 200)]

    # The deploy call: 200 once the model has answered through vLLM.
    deployed = httpx.post(f"{server.base_url}/load_lora_adapter", json={"lora_name": tuned})
    assert deployed.status_code == 200, deployed.text
    assert deployed.json() == {
        "object": "lora_adapter",
        "lora_name": tuned,
        "loaded": True,
        "by": "vllm",
    }
    assert standin.posts() == [(LOAD, tuned, 200), (CHAT, tuned, 200)]
    assert standin.calls[-1].body["max_tokens"] == 1  # type: ignore[index]
    load = next(call for call in standin.calls if call.path == LOAD)
    assert load.body == {"lora_name": tuned, "lora_path": str(adapter)}
    assert (Path(load.body["lora_path"]) / "adapter_config.json").is_file()
    ready = httpx.get(f"{server.root_url}/ready").json()
    assert ready["serving"] == "vllm"
    assert ready["loaded"]["deployed"] == [tuned]
    assert ready["loaded"]["base_models"] == [TINY_MODEL]

    # Chat: the answer's bytes as vLLM wrote them, and the request as the client sent it
    # (vLLM's own top_k, which the built-in serving refuses, reaches vLLM untouched).
    body = {"model": tuned, "messages": _messages(QUESTIONS[0]), "temperature": 0, "top_k": 3}
    answer = httpx.post(f"{server.base_url}/chat/completions", json=body)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.content == standin.sent[-1]
    assert standin.calls[-1].body == body
    reply = client.chat.completions.create(model=tuned, messages=_messages(QUESTIONS[1]))  # type: ignore[arg-type]
    assert reply.choices[0].message.content == f"stand-in answer from {tuned} (adapter)"

    # Streaming: the first event reaches the client while vLLM still holds the rest.
    standin.stream_gate.clear()
    finished = standin.streams_finished
    with httpx.stream(
        "POST",
        f"{server.base_url}/chat/completions",
        json={"model": tuned, "messages": _messages(QUESTIONS[0]), "stream": True},
        timeout=30,
    ) as streamed:
        assert streamed.status_code == 200
        assert streamed.headers["content-type"].startswith("text/event-stream")
        pieces = streamed.iter_raw()
        first = next(pieces)
        assert first.startswith(b"data: ")
        assert standin.streams_finished == finished, "the stream was gathered before it was sent"
        standin.stream_gate.set()
        received = first + b"".join(pieces)
    assert received == standin.sent[-1]
    assert received.endswith(b"data: [DONE]\n\n")
    stream = client.chat.completions.create(
        model=tuned,
        messages=_messages(QUESTIONS[0]),  # type: ignore[arg-type]
        stream=True,
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text.strip() == f"stand-in answer from {tuned} (adapter)"

    # The base model is forwarded as it is; a model the trainer does not have never is.
    base = client.chat.completions.create(model=TINY_MODEL, messages=_messages(QUESTIONS[0]))  # type: ignore[arg-type]
    assert base.choices[0].message.content == f"stand-in answer from {TINY_MODEL} (the base model)"
    calls = len(standin.calls)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="ft:tiny-chat::nothing1", messages=_messages("x"))  # type: ignore[arg-type]
    assert len(standin.calls) == calls

    # vLLM restarts and forgets the adapter: the chat that meets the 404 loads it again.
    standin.restart()
    before = len(standin.posts())
    reply = client.chat.completions.create(model=tuned, messages=_messages(QUESTIONS[0]))  # type: ignore[arg-type]
    assert reply.choices[0].message.content == f"stand-in answer from {tuned} (adapter)"
    assert standin.posts()[before:] == [(CHAT, tuned, 404), (LOAD, tuned, 200), (CHAT, tuned, 200)]
    # So does the deploy call.
    standin.restart()
    before = len(standin.posts())
    deployed = httpx.post(f"{server.base_url}/load_lora_adapter", json={"lora_name": tuned})
    assert deployed.status_code == 200, deployed.text
    assert standin.posts()[before:] == [(CHAT, tuned, 404), (LOAD, tuned, 200), (CHAT, tuned, 200)]

    # A trainer restarted with a short check keeps its deployed set, and the check alone
    # loads the adapter again after the next vLLM restart, with no chat asking for it.
    server.stop()
    server.extra_args = ["--vllm-check-seconds", "0.3"]
    server.start()
    client = server.client()
    standin.restart()
    before = len(standin.posts())
    _wait(lambda: tuned in standin.adapters, "the adapter was not loaded again")
    assert standin.posts()[before:] == [(LOAD, tuned, 200)]

    # Unloaded by the admin call, it is loaded again by the next chat that names it.
    unloaded = httpx.post(f"{server.base_url}/unload_lora_adapter", json={"lora_name": tuned})
    assert unloaded.json()["was_loaded"] is True
    assert standin.posts()[-1] == (UNLOAD, tuned, 200)
    assert client.chat.completions.create(model=tuned, messages=_messages(QUESTIONS[1]))  # type: ignore[arg-type]
    assert standin.posts()[-2:] == [(LOAD, tuned, 200), (CHAT, tuned, 200)]

    # Deleting the tuned model unloads it from vLLM; it answers no more.
    assert client.models.delete(tuned).deleted
    assert standin.posts()[-1] == (UNLOAD, tuned, 200)
    assert tuned not in standin.adapters
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model=tuned, messages=_messages(QUESTIONS[0]))  # type: ignore[arg-type]
    time.sleep(1)  # a few checks later it stays unloaded
    assert tuned not in standin.adapters

    # vLLM out of reach: an OpenAI-shaped 503, not a hang or a 500.
    standin.stop()
    with pytest.raises(openai.InternalServerError) as unreachable:
        client.chat.completions.create(model=TINY_MODEL, messages=_messages(QUESTIONS[0]))  # type: ignore[arg-type]
    assert unreachable.value.status_code == 503
    assert unreachable.value.code == "model_server_unavailable"
    assert VLLM_KEY not in unreachable.value.message
