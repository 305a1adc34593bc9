"""Reading request bodies and list parameters, with OpenAI's errors when they are wrong."""

from __future__ import annotations

import json
from typing import Any

from litestar import Request

from simulator.api_errors import UNPARSABLE_JSON, OpenAIError, integer_out_of_range, invalid_type

AnyRequest = Request[Any, Any, Any]


async def json_object(request: AnyRequest) -> dict[str, Any]:
    raw = await request.body()
    try:
        value = json.loads(raw) if raw.strip() else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        value = None
    if not isinstance(value, dict):
        raise OpenAIError(400, UNPARSABLE_JSON)
    return value


def limit_param(request: AnyRequest, default: int, maximum: int) -> int:
    """`limit` from the query; values above the maximum are served as the maximum."""
    raw = request.query_params.get("limit")
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise invalid_type("limit", "an integer", raw) from None
    if value < 1:
        raise integer_out_of_range("limit", value, 1, maximum)
    return min(value, maximum)


def list_body(data: list[dict[str, Any]], has_more: bool, **extra: Any) -> dict[str, Any]:
    return {"object": "list", "data": data, **extra, "has_more": has_more}
