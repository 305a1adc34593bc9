"""Shared Redis mechanics for JSON records: ids, timestamps, conditional writes, pages.

Each aggregate (dataset, job, webhook endpoint, delivery) is one JSON string
under its own key, plus a per-tenant sorted set (score = creation time) that
gives newest-first cursor pagination.

Every write is conditional and atomic (one Lua script, `commit`): a record is
created only where no record and no tombstone exist, updated only if it still
holds exactly the bytes the writer read, and deleted by replacing it with a
tombstone that expires later. So a slow writer (a worker that read a dataset a
minute ago) can never bring back a record that was deleted meanwhile, nor
overwrite a change it did not see: its write fails and it re-reads.
"""

from __future__ import annotations

import json
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from service.domain.records import Record
from service.domain.stamps import now_iso
from service.errors import MalformedRequest

R = TypeVar("R", bound=Record)

MAX_UPDATE_ATTEMPTS = 50
# A deleted record's key holds a tombstone this long, so writers that read the
# record before it was deleted find out and stop.
TOMBSTONE_SECONDS = 30 * 24 * 3600
ABSENT = "\x00absent"

# KEYS: the records' keys, then every other key the script touches.
# ARGV: n, tombstone ttl, then per record (expected, mode, value), then the
# number of size guards and per guard (key index, maximum), then the index
# operations as (command, key index, argument count, arguments...).
# A record's precondition: `expected` is the exact current value, or ABSENT
# for "no record and no tombstone". A guard's: the sorted set holds fewer
# than its maximum members. mode "set" writes value; "tomb" writes value as a
# tombstone with an expiry. Returns 0; the 1-based position of the first record
# whose precondition failed; or minus the position of the first failed guard.
# Nothing is written unless every precondition holds.
_COMMIT = """
local n = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
for i = 1, n do
  local expected = ARGV[3 * i]
  local current = redis.call('GET', KEYS[i])
  if expected == '\\0absent' then
    if current then return i end
  elseif current ~= expected then
    return i
  end
end
local p = 3 * n + 3
local guards = tonumber(ARGV[p])
for g = 1, guards do
  local key = KEYS[tonumber(ARGV[p + 2 * g - 1])]
  if redis.call('ZCARD', key) >= tonumber(ARGV[p + 2 * g]) then return -g end
end
p = p + 2 * guards + 1
for i = 1, n do
  local mode = ARGV[3 * i + 1]
  if mode == 'tomb' then
    redis.call('SET', KEYS[i], ARGV[3 * i + 2], 'EX', ttl)
  else
    redis.call('SET', KEYS[i], ARGV[3 * i + 2])
  end
end
while p <= #ARGV do
  local argc = tonumber(ARGV[p + 2])
  local call = {ARGV[p], KEYS[tonumber(ARGV[p + 1])]}
  for j = 1, argc do call[#call + 1] = ARGV[p + 2 + j] end
  redis.call(unpack(call))
  p = p + 3 + argc
end
return 0
"""


# One registered script per client: EVALSHA sends the hash, not the source, each time.
_commit_scripts: weakref.WeakKeyDictionary[Redis, AsyncScript] = weakref.WeakKeyDictionary()


def dumps(record: dict[str, Any]) -> str:
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False)


_TOMBSTONE_PREFIX = '{"tombstone":true'


def is_tombstone(raw: str) -> bool:
    return raw.startswith(_TOMBSTONE_PREFIX)


def tombstone(record_id: str) -> str:
    return dumps({"tombstone": True, "id": record_id, "deleted_at": now_iso()})


def parse(model: type[R], raw: str | None) -> R | None:
    """The typed record, or None when there is none (absent, or a tombstone)."""
    if raw is None or is_tombstone(raw):
        return None
    return model.model_validate_json(raw)


def serialize(record: Record) -> str:
    return record.model_dump_json()


async def get_record(redis: Redis, key: str, model: type[R]) -> R | None:
    return parse(model, await redis.get(key))


async def get_records(redis: Redis, keys: list[str], model: type[R]) -> list[R]:
    """Many records in one round trip (MGET), skipping ids that no longer exist."""
    if not keys:
        return []
    found = [parse(model, raw) for raw in await redis.mget(keys)]
    return [record for record in found if record is not None]


@dataclass(frozen=True, slots=True)
class Lookup(Generic[R]):
    """One record to read with others in one round trip (`read_together`); stores
    hand them out (`DatasetStore.lookup`, say) so callers never spell keys."""

    key: str
    model: type[R]


class Found:
    """What `read_together` found: `found[lookup]` is the record, or None."""

    def __init__(self, values: dict[str, Record | None]) -> None:
        self._values = values

    def __getitem__(self, lookup: Lookup[R]) -> R | None:
        return cast("R | None", self._values[lookup.key])


async def read_together(redis: Redis, lookups: Sequence[Lookup[Any]]) -> Found:
    """Records of any kinds in one round trip (MGET)."""
    raws = await redis.mget([lookup.key for lookup in lookups]) if lookups else []
    return Found(
        {lookup.key: parse(lookup.model, raw) for lookup, raw in zip(lookups, raws, strict=True)}
    )


class RecordGone(Exception):
    """The record does not exist (any more): it was deleted, or never made."""


class LimitReached(Exception):
    """A size guard of a commit failed: the sorted set is full."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


class WriteConflict(Exception):
    """A conditional write found the record changed (or present) since it was read."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


@dataclass(frozen=True, slots=True)
class Write:
    """One record in a commit: `expected` is the raw value read (ABSENT: must not
    exist); `value` the new JSON, written as a tombstone when `delete` is set."""

    key: str
    expected: str
    value: str
    delete: bool = False


# An index operation committed with the records: (command, key, *arguments),
# for example ("ZADD", index_key, score, member) or ("SREM", set_key, member).
Op = tuple[str | int | float, ...]


class ScriptKeys:
    """The KEYS of a script call being built, each key once: `slot` gives a key's
    1-based index (adding it if new), `operations` encodes index operations the way
    the scripts here run them: (command, key index, argument count, arguments...)."""

    def __init__(self, keys: Sequence[str] = ()) -> None:
        self.keys = list(keys)

    def slot(self, key: object) -> int:
        name = str(key)
        if name not in self.keys:
            self.keys.append(name)
        return self.keys.index(name) + 1

    def operations(self, ops: Iterable[Op]) -> list[str | int | float]:
        args: list[str | int | float] = []
        for command, key, *arguments in ops:
            args += [str(command), self.slot(key), len(arguments), *arguments]
        return args


@dataclass(frozen=True, slots=True)
class Creation:
    """A record created beside another write where its key is free (no record, no
    tombstone), with index operations that run only if it is created."""

    key: str
    value: str
    ops: tuple[Op, ...] = ()


@dataclass(frozen=True, slots=True)
class Guard:
    """A counter a write depends on: the write happens only while the counter still
    reads `value` (an absent counter reads "0")."""

    key: str
    value: str


async def commit(
    redis: Redis,
    writes: Sequence[Write],
    ops: Sequence[Op] = (),
    *,
    limits: Sequence[tuple[str, int]] = (),
) -> None:
    """Write every record and run every index operation, or nothing at all.

    `limits` are (sorted set key, maximum): the commit happens only while each
    set holds fewer members than its maximum (a per-tenant cap, say). Raises
    WriteConflict naming the first record whose precondition failed, or
    LimitReached naming the full set.
    """
    keys = ScriptKeys([w.key for w in writes])
    argv: list[str | int | float] = [len(writes), TOMBSTONE_SECONDS]
    for write in writes:
        argv += [write.expected, "tomb" if write.delete else "set", write.value]
    argv.append(len(limits))
    for limited, maximum in limits:
        argv += [keys.slot(limited), maximum]
    argv += keys.operations(ops)
    script = _commit_scripts.get(redis)
    if script is None:
        script = _commit_scripts[redis] = redis.register_script(_COMMIT)
    failed = int(await script(keys=keys.keys, args=[str(a) for a in argv]))
    if failed > 0:
        raise WriteConflict(writes[failed - 1].key)
    if failed < 0:
        raise LimitReached(limits[-failed - 1][0])


async def create_records(
    redis: Redis,
    records: Sequence[tuple[str, Record]],
    ops: Sequence[Op] = (),
    *,
    limits: Sequence[tuple[str, int]] = (),
) -> None:
    """Create new records (key, record): fails with WriteConflict if any key is taken,
    by a live record or a tombstone, and with LimitReached past a guard."""
    writes = [Write(key, ABSENT, serialize(record)) for key, record in records]
    await commit(redis, writes, ops, limits=limits)


async def update_record(
    redis: Redis,
    key: str,
    model: type[R],
    change: Callable[[R], R | None],
    *,
    extra: Callable[[R], Sequence[Op]] | None = None,
    read: str | None = None,
) -> R:
    """Apply `change` to the current record; it returns the new record (it may change
    the one it is given) or None for "no change". Compare-and-set: if the record
    changed meanwhile, `change` runs again on a fresh read. Raises RecordGone when
    there is no record.

    `extra(new_record)` gives index operations committed with the record, so
    the record and its indexes never disagree. `read`: the record's raw JSON as
    the caller read it, used instead of reading it again (if it is stale, the
    compare-and-set fails and the next try reads).
    """
    for _ in range(MAX_UPDATE_ATTEMPTS):
        if read is not None:
            raw, read = read, None
        else:
            raw = await redis.get(key)
        current = parse(model, raw)
        if raw is None or current is None:
            raise RecordGone(key)
        updated = change(current)
        if updated is None:
            return model.model_validate_json(raw)
        try:
            await commit(
                redis, [Write(key, raw, serialize(updated))], extra(updated) if extra else ()
            )
        except WriteConflict:
            continue
        return updated
    raise RuntimeError(f"could not update {key}: too much contention")


async def delete_record(
    redis: Redis,
    key: str,
    model: type[R],
    check: Callable[[R], None] | None = None,
    *,
    ops: Callable[[R], Sequence[Op]] | None = None,
) -> R:
    """Replace the record with a tombstone; `check` may refuse (raise) on the current
    record. Returns the record as it was. Raises RecordGone when there is none."""
    for _ in range(MAX_UPDATE_ATTEMPTS):
        raw = await redis.get(key)
        current = parse(model, raw)
        if raw is None or current is None:
            raise RecordGone(key)
        if check is not None:
            check(current)
        write = Write(key, raw, tombstone(current.id), delete=True)
        try:
            await commit(redis, [write], ops(current) if ops else ())
        except WriteConflict:
            continue
        return current
    raise RuntimeError(f"could not delete {key}: too much contention")


@dataclass(frozen=True, slots=True)
class Page:
    ids: list[str]
    has_more: bool


async def page_ids(
    redis: Redis, index_key: str, *, limit: int, after: str | None, oldest_first: bool = False
) -> Page:
    """Newest first (or oldest first). `after` is the last id of the previous page."""
    rank_of = redis.zrank if oldest_first else redis.zrevrank
    read = redis.zrange if oldest_first else redis.zrevrange
    if after is None:
        start = 0
    else:
        rank = await rank_of(index_key, after)
        if rank is None:
            raise MalformedRequest(
                f"after: {after!r} is not an id in this list", code="invalid_cursor"
            )
        start = int(rank) + 1
    ids = await read(index_key, start, start + limit)
    return Page(ids=list(ids[:limit]), has_more=len(ids) > limit)


def creation_score() -> float:
    return time.time()
