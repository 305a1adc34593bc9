"""Jobs in Redis: the record, its timeline, metrics and checkpoints.

- `fts:job:{id}`: the job as JSON (our status beside the provider's).
- `fts:job:{id}:events`: the timeline, oldest first (a list), with
  `…:event-ids` (a hash id -> position) that both dedupes provider events
  and lets `after=<id>` cursors find their place.
- `fts:job:{id}:metrics`: one JSON entry per training step.
- `fts:job:{id}:checkpoints`: hash of checkpoint id -> JSON.
- `fts:jobs:active`: ids of every non-terminal job (what the reconciler walks).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from service.domain.jobs import JobStatus, can_move, is_terminal
from service.errors import MalformedRequest, NotFound
from service.store.keys import Keys
from service.store.records import (
    Op,
    Page,
    create_records,
    creation_score,
    dumps,
    get_record,
    get_records,
    new_id,
    now_iso,
    page_ids,
    update_record,
)

# Append events exactly once: an id already in the index hash is skipped, so a
# sync that runs twice (or after a crash) never duplicates the timeline.
_APPEND_EVENTS = """
local added = 0
for i = 1, #ARGV, 3 do
  local id = ARGV[i]
  if redis.call('HEXISTS', KEYS[1], id) == 0 then
    local length = redis.call('RPUSH', KEYS[2], ARGV[i + 1])
    redis.call('HSET', KEYS[1], id, length - 1)
    if ARGV[i + 2] ~= '' then
      redis.call('RPUSH', KEYS[3], ARGV[i + 2])
    end
    added = added + 1
  end
end
return added
"""


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    """One event for the timeline; `metrics` set for a training-step event."""

    id: str
    record: dict[str, Any]
    metrics: dict[str, Any] | None = None


def service_event(
    job_id: str,
    message: str,
    *,
    kind: str = "message",
    level: str = "info",
    data: dict[str, Any] | None = None,
) -> TimelineEntry:
    """An event the service itself writes on a job's timeline."""
    event_id = new_id("evt")
    return TimelineEntry(
        id=event_id,
        record={
            "id": event_id,
            "object": "job.event",
            "job_id": job_id,
            "created_at": now_iso(),
            "source": "service",
            "type": kind,
            "level": level,
            "message": message,
            "data": data,
        },
    )


def transition_event(job_id: str, old: str | None, new: str, message: str) -> TimelineEntry:
    return service_event(job_id, message, kind="status", data={"from": old, "to": new})


def final_event(status: str) -> str:
    return f"job.{status}"


class JobStore:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._append = redis.register_script(_APPEND_EVENTS)

    async def create(self, job: dict[str, Any]) -> None:
        first = transition_event(job["id"], None, job["status"], "Job accepted")
        score = creation_score()
        ops: list[Op] = [
            ("ZADD", self.keys.jobs_by_tenant(job["tenant"]), score, job["id"]),
            ("ZADD", self.keys.jobs_by_dataset(job["dataset_id"]), score, job["id"]),
            ("SADD", self.keys.active_jobs, job["id"]),
        ]
        if job.get("validation_dataset_id"):
            ops.append(
                ("ZADD", self.keys.jobs_by_dataset(job["validation_dataset_id"]), score, job["id"])
            )
        await create_records(self.redis, [(self.keys.job(job["id"]), job)], ops)
        await self.append_events(job["id"], [first])

    async def get(self, job_id: str) -> dict[str, Any] | None:
        return await get_record(self.redis, self.keys.job(job_id))

    async def get_for_tenant(self, tenant: str, job_id: str) -> dict[str, Any]:
        job = await self.get(job_id)
        if job is None or job.get("tenant") != tenant:
            raise NotFound(f"No job {job_id} for this tenant")
        return job

    async def page(self, tenant: str, *, limit: int, after: str | None) -> Page:
        return await page_ids(
            self.redis, self.keys.jobs_by_tenant(tenant), limit=limit, after=after
        )

    async def many(self, ids: Iterable[str]) -> list[dict[str, Any]]:
        return await get_records(self.redis, [self.keys.job(i) for i in ids])

    async def active_ids(self) -> set[str]:
        return set(await self.redis.smembers(self.keys.active_jobs))

    async def update(
        self, job_id: str, change: Callable[[dict[str, Any]], dict[str, Any] | None]
    ) -> dict[str, Any]:
        """Atomic read-modify-write; keeps the active set and upstream index in step."""

        def indexes(job: dict[str, Any]) -> list[Op]:
            ops: list[Op] = []
            # A finished job stays "active" until its final webhook event exists, so the
            # reconciler revisits a job whose worker died between the two steps.
            if is_terminal(job["status"]) and final_event(job["status"]) in job.get(
                "announced", []
            ):
                ops.append(("SREM", self.keys.active_jobs, job_id))
            if job.get("fine_tuned_model"):
                models = self.keys.tenant_models(job["tenant"])
                ops.append(("SADD", models, job["fine_tuned_model"]))
            upstream_id = (job.get("upstream") or {}).get("job_id")
            if upstream_id:
                ops.append(("SET", self.keys.job_by_upstream(upstream_id), job_id))
            return ops

        return await update_record(self.redis, self.keys.job(job_id), change, extra=indexes)

    async def transition(
        self,
        job_id: str,
        new: JobStatus,
        message: str,
        *,
        also: Callable[[dict[str, Any]], None] | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Move to `new` if allowed (terminal is final) and record the event.

        Returns the job and whether it moved.
        """
        moved: list[str] = []

        def change(job: dict[str, Any]) -> dict[str, Any] | None:
            if not can_move(job["status"], new):
                if also is None:
                    return None
                also(job)
                job["updated_at"] = now_iso()
                return job
            moved.append(job["status"])
            job["status"] = new.value
            job["updated_at"] = now_iso()
            if is_terminal(new):
                job["finished_at"] = job.get("finished_at") or now_iso()
            if also is not None:
                also(job)
            return job

        job = await self.update(job_id, change)
        if moved:
            await self.append_events(job_id, [transition_event(job_id, moved[0], new, message)])
        return job, bool(moved)

    async def append_events(self, job_id: str, entries: list[TimelineEntry]) -> int:
        if not entries:
            return 0
        argv: list[str] = []
        for entry in entries:
            argv += [entry.id, dumps(entry.record), dumps(entry.metrics) if entry.metrics else ""]
        keys = [
            self.keys.job_event_ids(job_id),
            self.keys.job_events(job_id),
            self.keys.job_metrics(job_id),
        ]
        return int(await self._append(keys=keys, args=argv))

    async def events_page(
        self, job_id: str, *, limit: int, after: str | None
    ) -> tuple[list[dict[str, Any]], bool]:
        """Newest first, like every list in the API."""
        key = self.keys.job_events(job_id)
        if after is None:
            end = int(await self.redis.llen(key)) - 1
        else:
            position = await self.redis.hget(self.keys.job_event_ids(job_id), after)
            if position is None:
                raise MalformedRequest(
                    f"after: {after!r} is not an event of this job", code="invalid_cursor"
                )
            end = int(position) - 1
        if end < 0:
            return [], False
        start = max(0, end - limit)
        raws = await self.redis.lrange(key, start, end)
        newest_first = [json.loads(raw) for raw in reversed(raws)]
        has_more = len(newest_first) > limit
        return newest_first[:limit], has_more

    async def metrics(self, job_id: str) -> list[dict[str, Any]]:
        raws = await self.redis.lrange(self.keys.job_metrics(job_id), 0, -1)
        by_step: dict[int, dict[str, Any]] = {}
        for raw in raws:
            point = json.loads(raw)
            by_step[int(point["step"])] = point
        return [by_step[step] for step in sorted(by_step)]

    async def put_checkpoints(self, job_id: str, checkpoints: list[dict[str, Any]]) -> list[str]:
        """Store checkpoints; returns the ids that were new."""
        if not checkpoints:
            return []
        key = self.keys.job_checkpoints(job_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            for checkpoint in checkpoints:
                pipe.hsetnx(key, checkpoint["id"], dumps(checkpoint))
            results = await pipe.execute()
        return [c["id"] for c, added in zip(checkpoints, results, strict=True) if added]

    async def checkpoints(self, job_id: str) -> list[dict[str, Any]]:
        raws = await self.redis.hvals(self.keys.job_checkpoints(job_id))
        found = [json.loads(raw) for raw in raws]
        return sorted(found, key=lambda c: c["step_number"], reverse=True)

    async def uses_of_dataset(self, dataset_id: str) -> list[dict[str, Any]]:
        ids = await self.redis.zrange(self.keys.jobs_by_dataset(dataset_id), 0, -1)
        return await self.many(ids)

    async def id_for_upstream(self, upstream_id: str) -> str | None:
        value = await self.redis.get(self.keys.job_by_upstream(upstream_id))
        return str(value) if value is not None else None
