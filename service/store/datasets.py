"""Datasets in Redis: one JSON record per dataset plus a per-tenant index.

The normalized JSONL itself lives in the blob store; the record holds its
statistics, estimate and warnings.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from redis.asyncio import Redis

from service.errors import NotFound
from service.store.keys import Keys
from service.store.records import (
    Page,
    creation_score,
    dumps,
    get_record,
    get_records,
    page_ids,
    update_record,
)


class DatasetStore:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    async def create(self, *records: dict[str, Any]) -> None:
        """Store one or more datasets (a split stores two) in one transaction."""
        async with self.redis.pipeline(transaction=True) as pipe:
            score = creation_score()
            for offset, record in enumerate(records):
                pipe.set(self.keys.dataset(record["id"]), dumps(record))
                # A split's validation part sorts just after its training part.
                pipe.zadd(
                    self.keys.datasets_by_tenant(record["tenant"]),
                    {record["id"]: score - offset * 1e-6},
                )
            await pipe.execute()

    async def get(self, dataset_id: str) -> dict[str, Any] | None:
        return await get_record(self.redis, self.keys.dataset(dataset_id))

    async def get_for_tenant(self, tenant: str, dataset_id: str) -> dict[str, Any]:
        record = await self.get(dataset_id)
        if record is None or record.get("tenant") != tenant:
            raise NotFound(f"No dataset {dataset_id} for this tenant")
        return record

    async def update(
        self, dataset_id: str, change: Callable[[dict[str, Any]], dict[str, Any] | None]
    ) -> dict[str, Any]:
        return await update_record(self.redis, self.keys.dataset(dataset_id), change)

    async def page(self, tenant: str, *, limit: int, after: str | None) -> Page:
        return await page_ids(
            self.redis, self.keys.datasets_by_tenant(tenant), limit=limit, after=after
        )

    async def many(self, ids: Iterable[str]) -> list[dict[str, Any]]:
        return await get_records(self.redis, [self.keys.dataset(i) for i in ids])

    async def delete(self, record: dict[str, Any]) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self.keys.dataset(record["id"]))
            pipe.zrem(self.keys.datasets_by_tenant(record["tenant"]), record["id"])
            await pipe.execute()
