"""`/v1/chat/completions`: plain JSON or server-sent events.

Built-in serving generates here. With vLLM (VLLM_BASE_URL) the request's bytes are
forwarded to vLLM and its answer comes back byte for byte, streamed or not; only
`model` (which must name one of this trainer's models) and `stream` are read.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from litestar import Response, post
from litestar.response import Stream

from trainer import chat
from trainer.errors import (
    UNPARSABLE_JSON,
    APIError,
    invalid_type,
    missing_parameter,
    model_not_found,
)
from trainer.routes.parsing import AnyRequest, Trainer, json_object
from trainer.vllm_serving import VLLMServing

NO_CACHE = {"cache-control": "no-cache"}


@post("/chat/completions", status_code=200, operation_id="CreateChatCompletion")
async def create_chat_completion(request: AnyRequest, trainer: Trainer) -> Response[Any] | Stream:
    if trainer.vllm is not None:
        return await _through_vllm(request, trainer, trainer.vllm)
    _, generation, stream, include_usage = chat.parse_chat_request(
        await json_object(request), trainer.registry
    )
    if not stream:
        generations = await trainer.server.generate(generation)
        return Response(chat.completion(generation, generations))
    events = chat.stream_events(generation, trainer.server, include_usage)
    # The first event is awaited here, so a request that fails before any text (an
    # unknown adapter, a prompt longer than the context) still gets a status and
    # OpenAI's error body rather than a broken stream.
    first = await anext(events)

    async def body() -> AsyncIterator[bytes]:
        yield first
        async for event in events:
            yield event

    return Stream(body(), media_type="text/event-stream", headers=NO_CACHE)


async def _through_vllm(
    request: AnyRequest, trainer: Trainer, vllm: VLLMServing
) -> Response[Any] | Stream:
    raw = await request.body()
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict):
        raise APIError(400, UNPARSABLE_JSON)
    name = body.get("model")
    if name is None:
        raise missing_parameter("model")
    if not isinstance(name, str):
        raise invalid_type("model", "a string", name)
    served = trainer.registry.resolve(name)
    if served is None:
        raise model_not_found(name)
    answer = await vllm.chat(raw, served, stream=body.get("stream") is True)
    if answer.chunks is not None:
        return Stream(
            answer.chunks,
            status_code=answer.status,
            media_type=answer.content_type,
            headers=NO_CACHE,
        )
    return Response(answer.content, status_code=answer.status, media_type=answer.content_type)


handlers = [create_chat_completion]
