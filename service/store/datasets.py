"""Datasets in Redis: one JSON record per dataset plus a per-tenant index.

The normalized JSONL itself lives in the blob store; the record holds its
statistics, estimate and warnings. Datasets still being validated by the
worker are also in `fts:datasets:validating`, which the reconciler walks.

Every write is conditional (see `service.store.records`): a deleted dataset
leaves a tombstone, so the worker finishing a validation it started before
the delete finds the dataset gone instead of bringing it back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Literal

from redis.asyncio import Redis

from service.domain.records import Dataset
from service.errors import NotFound
from service.store.keys import Keys
from service.store.records import (
    ABSENT,
    Lookup,
    Op,
    Page,
    RecordGone,
    Write,
    WriteConflict,
    commit,
    create_records,
    creation_score,
    delete_record,
    get_record,
    get_records,
    page_ids,
    parse,
    serialize,
    update_record,
)

VALIDATING = "validating"


class DatasetStore:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    def _index_ops(self, records: Sequence[Dataset]) -> list[Op]:
        score = creation_score()
        ops: list[Op] = []
        for offset, record in enumerate(records):
            # A split's validation part sorts just after its training part.
            index = self.keys.datasets_by_tenant(record.tenant)
            ops.append(("ZADD", index, score - offset * 1e-6, record.id))
            if record.status == VALIDATING:
                ops.append(("SADD", self.keys.validating_datasets, record.id))
        return ops

    async def create(self, *records: Dataset) -> None:
        """Store one or more new datasets (a split stores two) in one atomic write."""
        await create_records(
            self.redis, [(self.keys.dataset(r.id), r) for r in records], self._index_ops(records)
        )

    async def get(self, dataset_id: str) -> Dataset | None:
        return await get_record(self.redis, self.keys.dataset(dataset_id), Dataset)

    async def get_for_tenant(self, tenant: str, dataset_id: str) -> Dataset:
        return self.owned(tenant, dataset_id, await self.get(dataset_id))

    def lookup(self, dataset_id: str) -> Lookup[Dataset]:
        """The dataset, to read with other records (`records.read_together`)."""
        return Lookup(self.keys.dataset(dataset_id), Dataset)

    @staticmethod
    def owned(tenant: str, dataset_id: str, record: Dataset | None) -> Dataset:
        """`record` (as read) if it is the tenant's; else NotFound, as for any unknown id."""
        if record is None or record.tenant != tenant:
            raise NotFound(f"No dataset {dataset_id} for this tenant")
        return record

    async def update(self, dataset_id: str, change: Callable[[Dataset], Dataset | None]) -> Dataset:
        """Compare-and-set; raises RecordGone if the dataset was deleted."""

        def index(record: Dataset) -> list[Op]:
            if record.status == VALIDATING:
                return []
            return [("SREM", self.keys.validating_datasets, dataset_id)]

        return await update_record(
            self.redis, self.keys.dataset(dataset_id), Dataset, change, extra=index
        )

    async def finish_validation(
        self, dataset_id: str, records: Sequence[Dataset]
    ) -> Literal["finished", "deleted", "already_final"]:
        """Replace a `validating` dataset by its final record(s) (a split adds the
        validation part), atomically. Nothing is written when the dataset was
        deleted meanwhile, or another run already gave it its final state."""
        key = self.keys.dataset(dataset_id)
        primary, *others = records
        while True:
            raw = await self.redis.get(key)
            current = parse(Dataset, raw)
            if raw is None or current is None:
                return "deleted"
            if current.status != VALIDATING:
                return "already_final"
            writes = [Write(key, raw, serialize(primary))]
            writes += [Write(self.keys.dataset(o.id), ABSENT, serialize(o)) for o in others]
            ops = self._index_ops(others)
            ops.append(("SREM", self.keys.validating_datasets, dataset_id))
            try:
                await commit(self.redis, writes, ops)
            except WriteConflict as conflict:
                if conflict.key != key:
                    raise
                continue
            return "finished"

    async def page(
        self, tenant: str, *, limit: int, after: str | None, oldest_first: bool = False
    ) -> Page:
        return await page_ids(
            self.redis,
            self.keys.datasets_by_tenant(tenant),
            limit=limit,
            after=after,
            oldest_first=oldest_first,
        )

    async def many(self, ids: Iterable[str]) -> list[Dataset]:
        return await get_records(self.redis, [self.keys.dataset(i) for i in ids], Dataset)

    async def validating_ids(self) -> set[str]:
        return set(await self.redis.smembers(self.keys.validating_datasets))

    async def delete(
        self, dataset_id: str, check: Callable[[Dataset], None] | None = None
    ) -> Dataset:
        """Leave a tombstone in the dataset's place; `check` may refuse on the current
        record. Returns the deleted record; NotFound when there is none."""

        def unindex(record: Dataset) -> list[Op]:
            return [
                ("ZREM", self.keys.datasets_by_tenant(record.tenant), dataset_id),
                ("SREM", self.keys.validating_datasets, dataset_id),
            ]

        try:
            return await delete_record(
                self.redis, self.keys.dataset(dataset_id), Dataset, check, ops=unindex
            )
        except RecordGone:
            raise NotFound(f"No dataset {dataset_id} for this tenant") from None
