"""Reading request bodies and list parameters, with OpenAI's errors when they are wrong."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from litestar import Request
from litestar.di import NamedDependency

from trainer.errors import UNPARSABLE_JSON, APIError, invalid_type, out_of_range
from trainer.state import TrainerState

AnyRequest = Request[Any, Any, Any]
# Handlers receive the server's state as `trainer: Trainer`.
Trainer = NamedDependency[TrainerState]


_T = TypeVar("_T")


async def json_object(request: AnyRequest) -> dict[str, Any]:
    raw = await request.body()
    try:
        value = json.loads(raw) if raw.strip() else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        value = None
    if not isinstance(value, dict):
        raise APIError(400, UNPARSABLE_JSON)
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
        raise out_of_range("limit", value, 1, maximum)
    return min(value, maximum)


def page_after(
    newest_first: Sequence[_T], after: str | None, limit: int, key: Callable[[_T], str]
) -> tuple[list[_T], bool]:
    """The items that follow the one whose id is `after`, and whether more follow them."""
    start = 0
    if after is not None:
        for index, item in enumerate(newest_first):
            if key(item) == after:
                start = index + 1
                break
    page = list(newest_first[start : start + limit])
    return page, start + limit < len(newest_first)


def list_body(data: list[dict[str, Any]], has_more: bool, **extra: Any) -> dict[str, Any]:
    return {"object": "list", "data": data, **extra, "has_more": has_more}
