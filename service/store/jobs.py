"""Jobs in Redis: the record, its timeline, metrics and checkpoints.

- `fts:job:{id}`: the job (`service.domain.records.Job`), our status beside the provider's.
- `fts:job:{id}:events`: the timeline, oldest first (a list), with
  `…:event-ids` (a hash id -> position) that both dedupes provider events
  and lets `after=<id>` cursors find their place.
- `fts:job:{id}:metrics-by-step`: hash of step -> metrics JSON.
- `fts:job:{id}:checkpoints`: hash of checkpoint id -> JSON.
- `fts:jobs:active`: ids of every non-terminal job (what the reconciler walks).
- `fts:job:{id}:poke`: set when something (a provider webhook, an action)
  wants the job synced now (`FollowSchedule.schedule(poke=True)` raises it in
  the same write that pulls the job forward); the next write of a sync step
  consumes it.

A sync step writes everything it learned in one atomic script (`apply`): the
job compared-and-set against the bytes it read, new timeline entries (each
id once), metrics, checkpoints, indexes, and the webhook deliveries that
announce it (created where new, only while the tenant's endpoints are as the
step saw them), in a single round trip. A new job is stored by the same script.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from service.domain.jobs import JobStatus, TimelineEntry, is_terminal
from service.domain.records import Job, JobCheckpoint, JobEvent
from service.errors import MalformedRequest, NotFound
from service.store.keys import Keys
from service.store.records import (
    ABSENT,
    Creation,
    Guard,
    Op,
    Page,
    ScriptKeys,
    WriteConflict,
    creation_score,
    dumps,
    get_record,
    get_records,
    page_ids,
    parse,
    serialize,
    update_record,
)

# KEYS: job, event ids, events, metrics, checkpoints, poke, then every other key.
# ARGV: expected job ('' to skip the check; ABSENT: no record and no tombstone
# may exist), new job ('' to leave it), a guard (key index, or 0 for none, and
# the counter's expected value), number of entries, per entry (id, event JSON
# or '', step, metrics JSON or ''), number of checkpoints, per checkpoint (id,
# JSON), number of records to create, per record (key index, JSON, number of
# operations, operations), then the index operations. An operation is
# (command, key index, argc, args). An entry is added once per id. Its metrics
# are stored by step: a provider event's overwrite, an entry without an event
# (a results-file row) only fills a step no event gave. A record to create is
# written, with its operations, only where its key is free (a tombstone holds
# it too).
# Returns {status, entries added, checkpoints added, poked, then per record to
# create 1 if it was created}: status 0 on success, 1 when the job changed
# since it was read, 2 when the guard's counter moved (checked first; nothing is
# written for 1 or 2).
_APPLY = """
local function run(p)
  local argc = tonumber(ARGV[p + 2])
  local call = {ARGV[p], KEYS[tonumber(ARGV[p + 1])]}
  for j = 1, argc do call[#call + 1] = ARGV[p + 2 + j] end
  redis.call(unpack(call))
  return p + 3 + argc
end
local guard = tonumber(ARGV[3])
if guard > 0 and (redis.call('GET', KEYS[guard]) or '0') ~= ARGV[4] then
  return {2, 0, 0, 0}
end
if ARGV[1] == '\\0absent' then
  if redis.call('EXISTS', KEYS[1]) == 1 then return {1, 0, 0, 0} end
elseif ARGV[1] ~= '' then
  if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {1, 0, 0, 0} end
end
if ARGV[2] ~= '' then redis.call('SET', KEYS[1], ARGV[2]) end
local p = 5
local entries = tonumber(ARGV[p])
local added = 0
for i = 1, entries do
  local id, event, step, metrics = ARGV[p + 1], ARGV[p + 2], ARGV[p + 3], ARGV[p + 4]
  if redis.call('HEXISTS', KEYS[2], id) == 0 then
    local position = -1
    if event ~= '' then position = redis.call('RPUSH', KEYS[3], event) - 1 end
    redis.call('HSET', KEYS[2], id, position)
    if metrics ~= '' then
      if event ~= '' then
        redis.call('HSET', KEYS[4], step, metrics)
      else
        redis.call('HSETNX', KEYS[4], step, metrics)
      end
    end
    added = added + 1
  end
  p = p + 4
end
p = p + 1
local checkpoints = tonumber(ARGV[p])
local new_checkpoints = 0
for i = 1, checkpoints do
  new_checkpoints = new_checkpoints + redis.call('HSETNX', KEYS[5], ARGV[p + 1], ARGV[p + 2])
  p = p + 2
end
p = p + 1
local creates = tonumber(ARGV[p])
local created = {}
p = p + 1
for i = 1, creates do
  local key, value, ops = KEYS[tonumber(ARGV[p])], ARGV[p + 1], tonumber(ARGV[p + 2])
  local free = redis.call('EXISTS', key) == 0
  if free then redis.call('SET', key, value) end
  created[i] = free and 1 or 0
  p = p + 3
  for j = 1, ops do
    if free then p = run(p) else p = p + 3 + tonumber(ARGV[p + 2]) end
  end
end
while p <= #ARGV do p = run(p) end
local poked = redis.call('DEL', KEYS[6])
local result = {0, added, new_checkpoints, poked}
for i = 1, creates do result[4 + i] = created[i] end
return result
"""


@dataclass(frozen=True, slots=True)
class JobSnapshot:
    """A job as read, with the exact bytes: the base of a compare-and-set."""

    raw: str
    job: Job


@dataclass(slots=True)
class ApplyResult:
    written: bool
    entries_added: int = 0
    checkpoints_added: int = 0
    poked: bool = False
    # The job as it now stands in Redis, when this write set it: the base of the
    # writer's next compare-and-set, without reading it back.
    snapshot: JobSnapshot | None = None
    # Nothing was written because the guard's counter moved (the job itself had not).
    guard_moved: bool = False
    # Per record of `Changes.creates`: whether this write created it (else it existed).
    created: list[bool] = field(default_factory=list)


@dataclass(slots=True)
class Changes:
    """What one sync step learned, written together by `JobStore.apply`."""

    job: Job | None = None
    entries: list[TimelineEntry] = field(default_factory=list)
    checkpoints: list[JobCheckpoint] = field(default_factory=list)
    # Records created in the same write where their keys are free (the deliveries
    # that announce what this write records), and a counter that must not have
    # moved since they were decided (the tenant's endpoints they were made for).
    creates: list[Creation] = field(default_factory=list)
    guard: Guard | None = None


class JobStore:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._apply = redis.register_script(_APPLY)

    def _indexes(self, job: Job) -> list[Op]:
        ops: list[Op] = []
        # A finished job stays "active" until its final webhook event exists, so the
        # reconciler revisits a job whose worker died between the two steps.
        if is_terminal(job.status) and f"job.{job.status}" in job.announced:
            ops.append(("SREM", self.keys.active_jobs, job.id))
        if job.fine_tuned_model and job.status == JobStatus.SUCCEEDED:
            models = self.keys.tenant_models(job.tenant)
            ops.append(("HSET", models, job.fine_tuned_model, job.provider))
        if job.upstream.job_id:
            ops.append(
                ("SET", self.keys.job_by_upstream(job.provider, job.upstream.job_id), job.id)
            )
        return ops

    async def create(self, job: Job, first: TimelineEntry) -> None:
        """Store a new job with its first timeline entry, its indexes and its place in
        the follow schedule, in one write; WriteConflict if its id is taken."""
        score = creation_score()
        ops: list[Op] = [
            ("ZADD", self.keys.jobs_by_tenant(job.tenant), score, job.id),
            ("ZADD", self.keys.jobs_by_dataset(job.dataset_id), score, job.id),
            ("SADD", self.keys.active_jobs, job.id),
            # Followed by the worker from now on (service.store.following).
            ("ZADD", self.keys.follow_due, "NX", int(time.time() * 1000), job.id),
        ]
        if job.validation_dataset_id:
            ops.append(
                ("ZADD", self.keys.jobs_by_dataset(job.validation_dataset_id), score, job.id)
            )
        result = await self._write(job.id, ABSENT, Changes(job=job, entries=[first]), ops)
        if not result.written:
            raise WriteConflict(self.keys.job(job.id))

    async def get(self, job_id: str) -> Job | None:
        return await get_record(self.redis, self.keys.job(job_id), Job)

    async def read_many(self, job_ids: Sequence[str]) -> dict[str, JobSnapshot]:
        """The jobs that exist among `job_ids`, as read, in one round trip."""
        if not job_ids:
            return {}
        raws = await self.redis.mget([self.keys.job(job_id) for job_id in job_ids])
        snapshots = {}
        for job_id, raw in zip(job_ids, raws, strict=True):
            job = parse(Job, raw)
            if raw is not None and job is not None:
                snapshots[job_id] = JobSnapshot(raw, job)
        return snapshots

    async def read(self, job_id: str) -> JobSnapshot | None:
        return (await self.read_many([job_id])).get(job_id)

    async def get_for_tenant(self, tenant: str, job_id: str) -> Job:
        job = await self.get(job_id)
        if job is None or job.tenant != tenant:
            raise NotFound(f"No job {job_id} for this tenant")
        return job

    async def page(self, tenant: str, *, limit: int, after: str | None) -> Page:
        return await page_ids(
            self.redis, self.keys.jobs_by_tenant(tenant), limit=limit, after=after
        )

    async def many(self, ids: Iterable[str]) -> list[Job]:
        return await get_records(self.redis, [self.keys.job(i) for i in ids], Job)

    async def active_ids(self) -> set[str]:
        return set(await self.redis.smembers(self.keys.active_jobs))

    async def update(self, job_id: str, change: Callable[[Job], Job | None]) -> Job:
        """Compare-and-set read-modify-write (for the API's actions); keeps indexes in step."""
        return await update_record(
            self.redis, self.keys.job(job_id), Job, change, extra=self._indexes
        )

    async def apply(self, job_id: str, base: JobSnapshot | None, changes: Changes) -> ApplyResult:
        """Write a sync step's findings at once. With `base`, the job is written only
        if it still holds `base.raw`, and with `changes.guard` only while its counter
        holds its value (else nothing is, and `written` is False)."""
        ops = self._indexes(changes.job) if changes.job else []
        return await self._write(job_id, base.raw if base is not None else "", changes, ops)

    async def _write(
        self, job_id: str, expected: str, changes: Changes, ops: Sequence[Op]
    ) -> ApplyResult:
        keys = ScriptKeys(
            [
                self.keys.job(job_id),
                self.keys.job_event_ids(job_id),
                self.keys.job_events(job_id),
                self.keys.job_metrics(job_id),
                self.keys.job_checkpoints(job_id),
                self.keys.job_poke(job_id),
            ]
        )
        raw = serialize(changes.job) if changes.job is not None else ""
        guard = changes.guard
        argv: list[str | int | float] = [
            expected,
            raw,
            keys.slot(guard.key) if guard is not None else 0,
            guard.value if guard is not None else "",
            len(changes.entries),
        ]
        for entry in changes.entries:
            argv += [
                entry.id,
                entry.event.model_dump_json() if entry.event is not None else "",
                int(entry.metrics["step"]) if entry.metrics else 0,
                dumps(dict(entry.metrics)) if entry.metrics else "",
            ]
        argv.append(len(changes.checkpoints))
        for checkpoint in changes.checkpoints:
            argv += [checkpoint.id, checkpoint.model_dump_json()]
        argv.append(len(changes.creates))
        for creation in changes.creates:
            argv += [keys.slot(creation.key), creation.value, len(creation.ops)]
            argv += keys.operations(creation.ops)
        argv += keys.operations(ops)
        status, added, new_checkpoints, poked, *created = await self._apply(
            keys=keys.keys, args=[str(a) for a in argv]
        )
        if int(status):
            return ApplyResult(written=False, guard_moved=int(status) == 2)
        written = parse(Job, raw) if raw else None
        return ApplyResult(
            True,
            int(added),
            int(new_checkpoints),
            bool(int(poked)),
            JobSnapshot(raw, written) if written is not None else None,
            created=[bool(int(flag)) for flag in created],
        )

    async def events_page(
        self, job_id: str, *, limit: int, after: str | None
    ) -> tuple[list[JobEvent], bool]:
        """Newest first, like every list in the API."""
        key = self.keys.job_events(job_id)
        if after is None:
            end = int(await self.redis.llen(key)) - 1
        else:
            position = await self.redis.hget(self.keys.job_event_ids(job_id), after)
            if position is None or int(position) < 0:
                raise MalformedRequest(
                    f"after: {after!r} is not an event of this job", code="invalid_cursor"
                )
            end = int(position) - 1
        if end < 0:
            return [], False
        start = max(0, end - limit)
        raws = await self.redis.lrange(key, start, end)
        newest_first = [JobEvent.model_validate_json(raw) for raw in reversed(raws)]
        has_more = len(newest_first) > limit
        return newest_first[:limit], has_more

    async def metrics(self, job_id: str) -> list[dict[str, Any]]:
        by_step = await self.redis.hgetall(self.keys.job_metrics(job_id))
        return [json.loads(by_step[step]) for step in sorted(by_step, key=int)]

    async def checkpoints(self, job_id: str) -> list[JobCheckpoint]:
        raws = await self.redis.hvals(self.keys.job_checkpoints(job_id))
        found = [JobCheckpoint.model_validate_json(raw) for raw in raws]
        return sorted(found, key=lambda c: c.step_number, reverse=True)

    async def uses_of_dataset(self, dataset_id: str) -> list[Job]:
        ids = await self.redis.zrange(self.keys.jobs_by_dataset(dataset_id), 0, -1)
        return await self.many(ids)

    async def tuned_model_provider(self, tenant: str, model: str) -> str | None:
        """The provider serving one of the tenant's tuned models; None if it has no such model."""
        value = await self.redis.hget(self.keys.tenant_models(tenant), model)
        return str(value) if value is not None else None

    async def tuned_models(self, tenant: str) -> dict[str, str]:
        return dict(await self.redis.hgetall(self.keys.tenant_models(tenant)))
