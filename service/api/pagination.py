"""The list envelope every collection route answers with."""

from __future__ import annotations

from typing import Generic, TypeVar

from pydantic import BaseModel

MAX_LIMIT = 100

T = TypeVar("T")


class ListResponse(BaseModel, Generic[T]):
    """`{"data": [...], "has_more": bool}`; pass the last id as `after` for the next page."""

    object: str = "list"
    data: list[T]
    has_more: bool
