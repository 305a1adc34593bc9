"""Evaluations in Redis: the record, its scored rows, and indexes.

- `fts:evaluation:{id}`: the evaluation (`service.domain.records.Evaluation`).
- `fts:evaluation:{id}:rows`: hash of example index -> scored row (JSON). A row
  is written once its every answer is final, under its index, so a run that
  repeats an example (a retried task) overwrites rather than duplicates it.
- `fts:tenant:{tenant}:evaluations`: the tenant's evaluations by creation time.
- `fts:evaluations:active`: ids of evaluations that are not finished, or whose
  final webhook is not yet emitted (what the reconciler walks).

The record is written compare-and-set (see `service.store.records`): a cancel
and a worker's progress never overwrite each other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from redis.asyncio import Redis

from service.domain.evaluations import is_finished
from service.domain.records import Evaluation, EvaluationRow
from service.errors import NotFound
from service.store.keys import Keys
from service.store.records import (
    Op,
    Page,
    create_records,
    creation_score,
    get_record,
    get_records,
    page_ids,
    update_record,
)


class EvaluationStore:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    def _indexes(self, evaluation: Evaluation) -> list[Op]:
        if is_finished(evaluation.status) and evaluation.announced:
            return [("SREM", self.keys.active_evaluations, evaluation.id)]
        return []

    async def create(self, evaluation: Evaluation) -> None:
        """Store a new evaluation; WriteConflict when its id exists (an automatic one
        made twice)."""
        await create_records(
            self.redis,
            [(self.keys.evaluation(evaluation.id), evaluation)],
            [
                (
                    "ZADD",
                    self.keys.evaluations_by_tenant(evaluation.tenant),
                    creation_score(),
                    evaluation.id,
                ),
                ("SADD", self.keys.active_evaluations, evaluation.id),
            ],
        )

    async def get(self, evaluation_id: str) -> Evaluation | None:
        return await get_record(self.redis, self.keys.evaluation(evaluation_id), Evaluation)

    async def get_for_tenant(self, tenant: str, evaluation_id: str) -> Evaluation:
        found = await self.get(evaluation_id)
        if found is None or found.tenant != tenant:
            raise NotFound(f"No evaluation {evaluation_id} for this tenant")
        return found

    async def many(self, ids: Iterable[str]) -> list[Evaluation]:
        return await get_records(self.redis, [self.keys.evaluation(i) for i in ids], Evaluation)

    async def update(
        self, evaluation_id: str, change: Callable[[Evaluation], Evaluation | None]
    ) -> Evaluation:
        """Compare-and-set; RecordGone when there is no such evaluation."""
        return await update_record(
            self.redis,
            self.keys.evaluation(evaluation_id),
            Evaluation,
            change,
            extra=self._indexes,
        )

    async def page(self, tenant: str, *, limit: int, after: str | None) -> Page:
        return await page_ids(
            self.redis, self.keys.evaluations_by_tenant(tenant), limit=limit, after=after
        )

    async def active_ids(self) -> set[str]:
        return set(await self.redis.smembers(self.keys.active_evaluations))

    # Rows

    async def save_rows(self, evaluation_id: str, rows: Sequence[EvaluationRow]) -> None:
        if rows:
            await self.redis.hset(
                self.keys.evaluation_rows(evaluation_id),
                mapping={str(row.index): row.model_dump_json() for row in rows},
            )

    async def row_count(self, evaluation_id: str) -> int:
        return int(await self.redis.hlen(self.keys.evaluation_rows(evaluation_id)))

    async def row_indexes(self, evaluation_id: str) -> set[int]:
        return {int(i) for i in await self.redis.hkeys(self.keys.evaluation_rows(evaluation_id))}

    async def all_rows(self, evaluation_id: str) -> list[EvaluationRow]:
        raws = await self.redis.hvals(self.keys.evaluation_rows(evaluation_id))
        rows = [EvaluationRow.model_validate_json(raw) for raw in raws]
        return sorted(rows, key=lambda row: row.index)

    async def rows_page(
        self, evaluation_id: str, *, total: int, limit: int, after: int | None
    ) -> tuple[list[EvaluationRow], bool]:
        """Rows in example order after index `after`; only rows already scored appear."""
        key = self.keys.evaluation_rows(evaluation_id)
        found: list[EvaluationRow] = []
        start = 0 if after is None else after + 1
        # Rows are written as examples finish, not in order: look ahead in windows.
        while start < total and len(found) <= limit:
            window = list(range(start, min(total, start + max(limit * 2, 50))))
            raws = await self.redis.hmget(key, [str(i) for i in window])
            found += [EvaluationRow.model_validate_json(raw) for raw in raws if raw is not None]
            start = window[-1] + 1
        return found[:limit], len(found) > limit
