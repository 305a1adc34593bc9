"""`/v1/chat/completions`: plain JSON or server-sent events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from litestar import Response, post
from litestar.response import Stream

from trainer import chat
from trainer.routes.parsing import AnyRequest, Trainer, json_object


@post("/chat/completions", status_code=200, operation_id="CreateChatCompletion")
async def create_chat_completion(
    request: AnyRequest, trainer: Trainer
) -> Response[dict[str, Any]] | Stream:
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

    return Stream(body(), media_type="text/event-stream", headers={"cache-control": "no-cache"})


handlers = [create_chat_completion]
