"""Chat completions: who answers, what they say, and how it is counted and streamed.

A base model answers plainly and the same way every time. A tuned model answers
with the trained answer whose question is closest to the last user message, which
is what "the model learned its data" looks like from outside.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from simulator import catalog, identifiers, tokens
from simulator.api_errors import (
    OpenAIError,
    integer_out_of_range,
    invalid_type,
    invalid_value,
    missing_parameter,
)
from simulator.state import SimulatorState, TunedModel

MESSAGE_ROLES = ["system", "assistant", "user", "function", "tool", "developer"]
# OpenAI streams about one token per chunk.
TOKENS_PER_STREAM_PIECE = 1


@dataclass(frozen=True, slots=True)
class ChatRequest:
    model: str  # as the response names it: snapshot for aliases, the id for tuned models
    encoding: str
    tuned: TunedModel | None
    messages: list[dict[str, Any]]
    max_tokens: int | None
    stop: tuple[str, ...]
    n: int
    stream: bool
    include_usage: bool
    # `response_format: {"type": "json_schema", ...}`'s schema: the answer is JSON that fits it.
    json_schema: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Reply:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int

    def usage(self) -> dict[str, Any]:
        return usage(self.prompt_tokens, self.completion_tokens)


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


def parse_chat_request(body: dict[str, Any], state: SimulatorState) -> ChatRequest:
    name = body.get("model")
    if name is None:
        raise missing_parameter("model")
    if not isinstance(name, str):
        raise invalid_type("model", "a string", name)
    messages = _messages(body.get("messages"))
    model, encoding, tuned = _resolve_chat_model(name, state)

    max_tokens = body.get("max_completion_tokens")
    param = "max_completion_tokens"
    if max_tokens is None:
        max_tokens, param = body.get("max_tokens"), "max_tokens"
    if max_tokens is not None:
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
            raise invalid_type(param, "an integer", max_tokens)
        if max_tokens < 1:
            raise integer_out_of_range(param, max_tokens, 1, 2**31 - 1)

    n = body.get("n") or 1
    if not isinstance(n, int) or isinstance(n, bool):
        raise invalid_type("n", "an integer", n)
    if not 1 <= n <= 128:
        raise integer_out_of_range("n", n, 1, 128)

    stream = bool(body.get("stream") or False)
    options = body.get("stream_options")
    if options is not None and not stream:
        raise OpenAIError(
            400,
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            param="stream_options",
            code="invalid_value",
        )
    include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
    json_schema = _json_schema(body.get("response_format"))
    return ChatRequest(
        model=model,
        encoding=encoding,
        tuned=tuned,
        messages=messages,
        max_tokens=max_tokens,
        stop=_stop(body.get("stop")),
        n=n,
        stream=stream,
        include_usage=include_usage,
        json_schema=json_schema,
    )


def _json_schema(value: Any) -> dict[str, Any] | None:
    """The schema a structured-output request asks the answer to fit; `json_object`
    asks for any object (the empty schema)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise invalid_type("response_format", "an object", value)
    kind = value.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "object"}
    if kind == "json_schema":
        spec = value.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise missing_parameter("response_format.json_schema.name")
        schema = spec.get("schema")
        return schema if isinstance(schema, dict) else {"type": "object"}
    raise invalid_value("response_format.type", kind, ["text", "json_object", "json_schema"])


def fitting_value(schema: dict[str, Any], seed: str, path: str = "") -> Any:
    """A value that fits `schema`, the same for the same seed and path: numbers and
    choices vary with the conversation, strings say what they are."""
    digest = int.from_bytes(hashlib.sha256(f"{seed}|{path}".encode()).digest()[:8], "big")
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][digest % len(schema["enum"])]
    for combined in ("anyOf", "oneOf"):
        if isinstance(schema.get(combined), list) and schema[combined]:
            return fitting_value(schema[combined][0], seed, path)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or "properties" in schema:
        properties = schema.get("properties") or {}
        return {
            name: fitting_value(sub if isinstance(sub, dict) else {}, seed, f"{path}.{name}")
            for name, sub in properties.items()
        }
    if kind == "array":
        items = schema.get("items")
        return [fitting_value(items if isinstance(items, dict) else {}, seed, f"{path}[0]")]
    if kind in ("integer", "number"):
        low = int(schema.get("minimum", 0))
        high = int(schema.get("maximum", low + 9))
        return low + digest % (max(low, high) - low + 1)
    if kind == "boolean":
        return bool(digest % 2)
    if kind == "null":
        return None
    return f"Simulated {path.rsplit('.', 1)[-1] or 'value'}."


def _messages(value: Any) -> list[dict[str, Any]]:
    if value is None:
        raise missing_parameter("messages")
    if not isinstance(value, list):
        raise invalid_type("messages", "an array", value)
    if not value:
        raise OpenAIError(
            400,
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got "
            "an empty array instead.",
            param="messages",
            code="empty_array",
        )
    for index, message in enumerate(value):
        param = f"messages[{index}]"
        if not isinstance(message, dict):
            raise invalid_type(param, "an object", message)
        role = message.get("role")
        if role is None:
            raise missing_parameter(f"{param}.role")
        if role not in MESSAGE_ROLES:
            raise invalid_value(f"{param}.role", role, MESSAGE_ROLES)
        if role != "assistant" and message.get("content") is None:
            raise missing_parameter(f"{param}.content")
    return value


def _stop(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,) if value else ()
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        if len(value) > 4:
            raise OpenAIError(
                400,
                "Invalid 'stop': array too long. Expected an array with maximum length 4, but "
                f"got an array with length {len(value)} instead.",
                param="stop",
                code="array_above_max_length",
            )
        return tuple(item for item in value if item)
    raise invalid_type("stop", "a string or an array of strings", value)


def _resolve_chat_model(name: str, state: SimulatorState) -> tuple[str, str, TunedModel | None]:
    tuned = state.tuned_models.get(name)
    if tuned is not None:
        return tuned.id, tuned.encoding, tuned
    info = catalog.resolve(name)
    if info is None:
        raise OpenAIError(
            404,
            f"The model `{name}` does not exist or you do not have access to it.",
            code="model_not_found",
        )
    if not info.chat:
        raise OpenAIError(
            404,
            "This is not a chat model and thus not supported in the v1/chat/completions "
            "endpoint. Did you mean to use v1/completions?",
            param="model",
        )
    return info.id, info.encoding, None


def last_user_text(messages: list[dict[str, Any]]) -> str | None:
    for message in reversed(messages):
        if message.get("role") == "user":
            return tokens.message_text(message.get("content", ""))
    return None


def base_answer(model: str, question: str | None) -> str:
    if question is None:
        return "Hello! How can I help you today?"
    return (
        f'You asked: "{question}". This is {model}, a general-purpose model answering in '
        "general terms; it has not been trained on your data."
    )


def reply(request: ChatRequest) -> Reply:
    question = last_user_text(request.messages)
    text: str | None = None
    if request.json_schema is not None:
        seed = json.dumps(request.messages, ensure_ascii=False, sort_keys=True)
        text = json.dumps(fitting_value(request.json_schema, seed), ensure_ascii=False)
    elif request.tuned is not None and question is not None:
        found = request.tuned.answers.recall(question)
        text = found.answer if found else None
    if text is None:
        text = base_answer(request.model, question)
    finish_reason = "stop"
    cuts = [text.find(stop) for stop in request.stop if stop in text]
    if cuts:
        text = text[: min(cuts)]
    completion_tokens = tokens.count_text(request.encoding, text)
    if request.max_tokens is not None:
        text, cut_short = tokens.truncate(request.encoding, text, request.max_tokens)
        if cut_short:
            # The model was stopped after generating exactly max_tokens tokens, even
            # when the last one was half of a character that cannot be shown.
            finish_reason, completion_tokens = "length", request.max_tokens
    prompt_tokens = tokens.count_messages(request.encoding, request.messages)
    return Reply(text, finish_reason, prompt_tokens, completion_tokens)


def _fingerprint(model: str) -> str:
    return "fp_" + hashlib.sha256(model.encode()).hexdigest()[:10]


def completion(request: ChatRequest) -> dict[str, Any]:
    answer = reply(request)
    return {
        "id": identifiers.completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.model,
        "choices": [
            {
                "index": index,
                "message": {
                    "role": "assistant",
                    "content": answer.text,
                    "refusal": None,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": answer.finish_reason,
            }
            for index in range(request.n)
        ],
        "usage": usage(answer.prompt_tokens, answer.completion_tokens * request.n),
        "service_tier": "default",
        "system_fingerprint": _fingerprint(request.model),
    }


def stream(request: ChatRequest) -> Iterator[bytes]:
    """Server-sent events: a role chunk, content pieces, a finish chunk, usage, `[DONE]`."""
    answer = reply(request)
    completion_id = identifiers.completion_id()
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
        if request.include_usage:
            body["usage"] = usage_value
        return b"data: " + json.dumps(body, ensure_ascii=False).encode() + b"\n\n"

    def choice(index: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}

    pieces = tokens.split_into_pieces(request.encoding, answer.text, TOKENS_PER_STREAM_PIECE)
    for index in range(request.n):
        yield chunk([choice(index, {"role": "assistant", "content": "", "refusal": None})])
        for piece in pieces:
            yield chunk([choice(index, {"content": piece})])
        yield chunk([choice(index, {}, answer.finish_reason)])
    if request.include_usage:
        yield chunk([], usage(answer.prompt_tokens, answer.completion_tokens * request.n))
    yield b"data: [DONE]\n\n"
