"""Chat completions: the request checked as OpenAI checks it, the answer in OpenAI's shapes.

`model` selects a base model, a tuned model or a checkpoint (see registry.py).
Honoured: `messages` (through the model's chat template), `max_tokens` /
`max_completion_tokens`, `temperature` (0 means greedy decoding), `top_p`,
`stop`, `n`, `seed`, `stream` and `stream_options.include_usage`. Parameters a
local model cannot honour (tools, logprobs, penalties, JSON mode) are refused
with a 400 naming them, unless they are sent with their neutral value.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from trainer import ids
from trainer.errors import (
    APIError,
    invalid_type,
    invalid_value,
    missing_parameter,
    model_not_found,
    out_of_range,
    unknown_parameter,
)
from trainer.registry import ModelRegistry, ServedModel
from trainer.serving import Finished, Generation, GenerationRequest, ModelServer
from trainer.training_data import message_text

ROLES = ["system", "developer", "user", "assistant", "tool", "function"]
MAX_CHOICES = 8

_HONOURED = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "stop",
        "n",
        "seed",
        "stream",
        "stream_options",
        "user",
        "metadata",
        "store",
        "service_tier",
    }
)
# Accepted only with the value that changes nothing.
_NEUTRAL: dict[str, tuple[Any, ...]] = {
    "frequency_penalty": (None, 0, 0.0),
    "presence_penalty": (None, 0, 0.0),
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "logit_bias": (None, {}),
    "tools": (None, []),
    "tool_choice": (None, "none", "auto"),
    "parallel_tool_calls": (None, True, False),
    "response_format": (None, {"type": "text"}),
}


def parse_chat_request(
    body: dict[str, Any], registry: ModelRegistry
) -> tuple[ServedModel, GenerationRequest, bool, bool]:
    """(the model, what to generate, stream?, include usage in the stream?)."""
    for key, value in body.items():
        if key in _HONOURED:
            continue
        if key not in _NEUTRAL:
            raise unknown_parameter(key)
        if value not in _NEUTRAL[key]:
            raise APIError(
                400,
                f"'{key}' is not supported by this trainer's models; leave it out.",
                param=key,
                code="unsupported_parameter",
            )
    name = body.get("model")
    if name is None:
        raise missing_parameter("model")
    if not isinstance(name, str):
        raise invalid_type("model", "a string", name)
    messages = _messages(body.get("messages"))
    served = registry.resolve(name)
    if served is None:
        raise model_not_found(name)
    if served.base.chat_template() is None:
        raise APIError(
            400,
            f"Model {served.base.id} has no chat template, so it cannot answer chat messages.",
            param="model",
            code="model_not_supported",
        )

    max_tokens, param = body.get("max_completion_tokens"), "max_completion_tokens"
    if max_tokens is None:
        max_tokens, param = body.get("max_tokens"), "max_tokens"
    if max_tokens is not None:
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
            raise invalid_type(param, "an integer", max_tokens)
        if max_tokens < 1:
            raise out_of_range(param, max_tokens, 1, served.base.context_length)

    temperature = _number(body, "temperature", 1.0, 0.0, 2.0)
    top_p = _number(body, "top_p", 1.0, 0.0, 1.0)
    if top_p == 0:
        raise out_of_range("top_p", top_p, 1e-9, 1.0)

    n = body.get("n")
    if n is None:
        n = 1
    if not isinstance(n, int) or isinstance(n, bool):
        raise invalid_type("n", "an integer", n)
    if not 1 <= n <= MAX_CHOICES:
        raise out_of_range("n", n, 1, MAX_CHOICES)

    seed = body.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise invalid_type("seed", "an integer", seed)

    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise invalid_type("stream", "a boolean", stream)
    options = body.get("stream_options")
    if options is not None:
        if not stream:
            raise APIError(
                400,
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                param="stream_options",
                code="invalid_value",
            )
        if not isinstance(options, dict):
            raise invalid_type("stream_options", "an object", options)
    include_usage = isinstance(options, dict) and bool(options.get("include_usage"))

    request = GenerationRequest(
        model=name,
        base=served.base,
        adapter_dir=served.adapter_dir,
        messages=messages,
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        stop=_stop(body.get("stop")),
        seed=seed,
        n=n,
    )
    return served, request, bool(stream), include_usage


def _number(body: dict[str, Any], param: str, default: float, low: float, high: float) -> float:
    value = body.get(param)
    if value is None:
        return default
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise invalid_type(param, "a number", value)
    if not low <= value <= high:
        raise out_of_range(param, float(value), low, high)
    return float(value)


def _messages(value: Any) -> list[dict[str, str]]:
    if value is None:
        raise missing_parameter("messages")
    if not isinstance(value, list):
        raise invalid_type("messages", "an array", value)
    if not value:
        raise APIError(
            400,
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got "
            "an empty array instead.",
            param="messages",
            code="empty_array",
        )
    plain: list[dict[str, str]] = []
    for index, message in enumerate(value):
        param = f"messages[{index}]"
        if not isinstance(message, dict):
            raise invalid_type(param, "an object", message)
        role = message.get("role")
        if role is None:
            raise missing_parameter(f"{param}.role")
        if role not in ROLES:
            raise invalid_value(f"{param}.role", role, ROLES)
        content = message.get("content")
        if content is None and role != "assistant":
            raise missing_parameter(f"{param}.content")
        if content is not None and not isinstance(content, str | list):
            raise invalid_type(f"{param}.content", "a string or an array", content)
        # Chat templates know `system`; OpenAI's newer `developer` role means the same.
        plain.append(
            {"role": "system" if role == "developer" else role, "content": message_text(content)}
        )
    return plain


def _stop(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,) if value else ()
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        if len(value) > 4:
            raise APIError(
                400,
                "Invalid 'stop': array too long. Expected an array with maximum length 4, but "
                f"got an array with length {len(value)} instead.",
                param="stop",
                code="array_above_max_length",
            )
        return tuple(item for item in value if item)
    raise invalid_type("stop", "a string or an array of strings", value)


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _fingerprint(model: str) -> str:
    return "fp_" + hashlib.sha256(model.encode()).hexdigest()[:10]


def completion(request: GenerationRequest, generations: list[Generation]) -> dict[str, Any]:
    prompt_tokens = generations[0].prompt_tokens if generations else 0
    return {
        "id": ids.completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.model,
        "choices": [
            {
                "index": index,
                "message": {
                    "role": "assistant",
                    "content": generation.text,
                    "refusal": None,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": generation.finish_reason,
            }
            for index, generation in enumerate(generations)
        ],
        "usage": usage(prompt_tokens, sum(g.completion_tokens for g in generations)),
        "service_tier": "default",
        "system_fingerprint": _fingerprint(request.model),
    }


async def stream_events(
    request: GenerationRequest, server: ModelServer, include_usage: bool
) -> AsyncIterator[bytes]:
    """Server-sent events: a role chunk, content pieces, a finish chunk, usage, `[DONE]`."""
    completion_id = ids.completion_id()
    created = int(time.time())

    def chunk(choices: list[dict[str, Any]], usage_value: Any = None) -> bytes:
        body: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": request.model,
            "service_tier": "default",
            "system_fingerprint": _fingerprint(request.model),
            "choices": choices,
        }
        if include_usage:
            body["usage"] = usage_value
        return b"data: " + json.dumps(body, ensure_ascii=False).encode() + b"\n\n"

    def choice(index: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}

    started: set[int] = set()
    prompt_tokens = completion_tokens = 0
    sent_anything = False
    try:
        async for item in server.stream(request):
            if item.index not in started:
                started.add(item.index)
                sent_anything = True
                yield chunk(
                    [choice(item.index, {"role": "assistant", "content": "", "refusal": None})]
                )
            if isinstance(item, Finished):
                prompt_tokens = item.generation.prompt_tokens
                completion_tokens += item.generation.completion_tokens
                yield chunk([choice(item.index, {}, item.generation.finish_reason)])
            elif item.text:
                yield chunk([choice(item.index, {"content": item.text})])
    except APIError as exc:
        if not sent_anything:
            raise  # the route still answers with a status and OpenAI's error body
        # Headers are gone by now; the error travels as an event of its own.
        yield b"data: " + json.dumps(exc.body(), ensure_ascii=False).encode() + b"\n\n"
        return
    if include_usage:
        yield chunk([], usage(prompt_tokens, completion_tokens))
    yield b"data: [DONE]\n\n"
