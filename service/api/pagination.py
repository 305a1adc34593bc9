"""The list envelope every collection route answers with."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from pydantic import BaseModel

from service.store.records import Page

MAX_LIMIT = 100

T = TypeVar("T")


class ListResponse(BaseModel, Generic[T]):
    """`{"data": [...], "has_more": bool}`; pass the last id as `after` for the next page."""

    object: str = "list"
    data: list[T]
    has_more: bool


R = TypeVar("R")
FILTER_BATCH = 100


async def walk_newest_first(
    fetch_ids: Callable[[int, str | None], Awaitable[Page]],
    load: Callable[[list[str]], Awaitable[list[R]]],
    keep: Callable[[R], bool] | None,
    *,
    limit: int,
    after: str | None,
) -> tuple[list[R], bool]:
    """One page of an index, newest first, keeping only records that pass `keep`.

    Without a filter it reads exactly one page. With one it reads ahead in
    batches until `limit` records pass or the index ends. Returns the records
    and whether more would follow.
    """
    if keep is None:
        page = await fetch_ids(limit, after)
        return await load(page.ids), page.has_more
    found: list[R] = []
    cursor = after
    while True:
        page = await fetch_ids(max(limit, FILTER_BATCH), cursor)
        for record in await load(page.ids):
            if keep(record):
                if len(found) == limit:
                    return found, True
                found.append(record)
        if not page.has_more or not page.ids:
            return found, False
        cursor = page.ids[-1]
