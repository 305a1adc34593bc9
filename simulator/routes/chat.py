"""`/v1/chat/completions`, plain JSON or server-sent events."""

from __future__ import annotations

from typing import Any

from litestar import Response, post
from litestar.response import Stream

from simulator import chat
from simulator.routes.injection import Sim
from simulator.routes.parsing import AnyRequest, json_object


@post("/chat/completions", status_code=200, operation_id="createChatCompletion")
async def create_chat_completion(
    request: AnyRequest, sim: Sim
) -> Response[dict[str, Any]] | Stream:
    parsed = chat.parse_chat_request(await json_object(request), sim)
    if parsed.stream:
        return Stream(
            chat.stream(parsed),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache"},
        )
    return Response(chat.completion(parsed))


handlers = [create_chat_completion]
