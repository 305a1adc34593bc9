"""The follow schedule: which jobs the worker follows, and when each is next due.

- `fts:follow:due` (sorted set): job id -> when its next sync step is due, in
  unix milliseconds. Urgent work (a provider's webhook, a user's action) is
  given a due time a day in the past, so it is claimed before anything merely due.
- `fts:follow:claimed` (sorted set): job id -> when the claim of the follower
  running its step lapses. The score is also the claim's token: a release is
  honoured only from the claim that still holds the job.
- `fts:follow:poked` (set): claimed jobs asked for a sync while their step ran;
  they are due again the moment it ends.

A job is in at most one of the two sorted sets. Followers claim due jobs, and
jobs whose claim lapsed (their worker died), in one script, run the steps, and
release a batch of them with their next due times in another. Every operation
is one round trip however many jobs it covers. A job in neither set is not
followed: the reconciler puts every active job back (`schedule`), so a lost
entry delays a job by one reconcile interval at most.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from redis.asyncio import Redis

from service.store.keys import Keys

# KEYS: due, claimed, poked. ARGV: now, lease until, how many at most, how
# many of them may be merely due (not urgent), the urgent cut-off. Urgent jobs
# (due before the cut-off) come first, then merely due ones, then lapsed claims.
# Returns {claimed ids, the earliest due time left or false}.
_CLAIM = """
local limit, ordinary = tonumber(ARGV[3]), tonumber(ARGV[4])
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[5], 'LIMIT', 0, limit)
local room = math.min(limit, #ids + ordinary) - #ids
if room > 0 then
  local due = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[5], ARGV[1], 'LIMIT', 0, room)
  for _, id in ipairs(due) do ids[#ids + 1] = id end
  room = room - #due
end
if room > 0 then
  local lapsed = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, room)
  for _, id in ipairs(lapsed) do ids[#ids + 1] = id end
end
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('SREM', KEYS[3], id)
  redis.call('ZADD', KEYS[2], ARGV[2], id)
end
local earliest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {ids, earliest[2] or false}
"""

# KEYS: due, claimed, poked. ARGV: the urgent due time, then triples (id, claim
# token, next due or '' to stop following). A job poked while it was claimed is
# due at the urgent time. Returns how many of the claims were still held.
_RELEASE = """
local urgent = ARGV[1]
local held = 0
for i = 2, #ARGV, 3 do
  local id = ARGV[i]
  local score = redis.call('ZSCORE', KEYS[2], id)
  if score and tonumber(score) == tonumber(ARGV[i + 1]) then
    held = held + 1
    redis.call('ZREM', KEYS[2], id)
    local poked = redis.call('SREM', KEYS[3], id) == 1
    local due = ARGV[i + 2]
    if due ~= '' then
      if poked then due = urgent end
      redis.call('ZADD', KEYS[1], due, id)
    end
  end
end
return held
"""

# follow(id, poke flag key, due time, poke, flag lifetime): a job being stepped
# (claimed) is left to its step; with `poke` it is marked to be due again the
# moment that step ends, and a waiting job is moved up to the due time if that
# is earlier. `poke` also raises the job's own flag, which a running step sees
# when it writes (`JobStore.apply`). Without it a waiting job keeps its time.
# Returns 1 if the job was not followed before.
_FOLLOW_LUA = """
local function follow(id, flag, due, poke, ttl)
  if poke then redis.call('SET', flag, '1', 'EX', ttl) end
  if redis.call('ZSCORE', KEYS[2], id) then
    if poke then redis.call('SADD', KEYS[3], id) end
    return 0
  elseif poke then
    return redis.call('ZADD', KEYS[1], 'LT', due, id)
  end
  return redis.call('ZADD', KEYS[1], 'NX', due, id)
end
"""

# KEYS: due, claimed, poked, then in 'poke' mode each job's poke flag (in the
# order of the ids). ARGV: due time, mode ('poke' or 'add'), the flag's
# lifetime in seconds, ids. Returns how many jobs were not followed before.
_SCHEDULE = (
    _FOLLOW_LUA
    + """
local poke = ARGV[2] == 'poke'
local added = 0
for i = 4, #ARGV do
  added = added + follow(ARGV[i], KEYS[i], ARGV[1], poke, ARGV[3])
end
return added
"""
)

# KEYS: due, claimed, poked, the provider job id -> our job id key. ARGV: due
# time, the flag's lifetime, the poke flag key around the job id (before,
# after). Pokes the job the provider's id names; returns its id, or false
# when the id names none of ours. (The flag's key is only known once the id is
# read: this script needs Redis as one node, as every script here does.)
_POKE_UPSTREAM = (
    _FOLLOW_LUA
    + """
local id = redis.call('GET', KEYS[4])
if not id then return false end
follow(id, ARGV[3] .. id .. ARGV[4], ARGV[1], true, ARGV[2])
return id
"""
)


# How long a job's poke flag waits for a step to see it.
POKE_SECONDS = 3600


@dataclass(frozen=True, slots=True)
class Claim:
    job_id: str
    token: int


@dataclass(frozen=True, slots=True)
class Claimed:
    claims: list[Claim]
    # When the next job left in the schedule is due (unix ms), if any is.
    earliest_due_ms: int | None


@dataclass(frozen=True, slots=True)
class Release:
    job_id: str
    token: int
    # Unix ms of the next step, or None when the job is no longer followed.
    due_ms: int | None


class FollowSchedule:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._keys = [keys.follow_due, keys.follow_claimed, keys.follow_poked]
        self._claim = redis.register_script(_CLAIM)
        self._release = redis.register_script(_RELEASE)
        self._schedule = redis.register_script(_SCHEDULE)
        self._poke_upstream = redis.register_script(_POKE_UPSTREAM)

    async def schedule(self, job_ids: Sequence[str], due_ms: int, *, poke: bool = False) -> int:
        """Follow these jobs from `due_ms`; a job already followed keeps its place. With
        `poke`, a waiting job is moved up to `due_ms`, one being stepped right now is
        due again the moment its step ends, and each job's poke flag is raised (one
        write for all of it). Returns how many were not followed before."""
        if not job_ids:
            return 0
        keys = self._keys + ([self.keys.job_poke(job_id) for job_id in job_ids] if poke else [])
        args = [due_ms, "poke" if poke else "add", POKE_SECONDS, *job_ids]
        return int(await self._schedule(keys=keys, args=args))

    async def poke_upstream(self, provider: str, upstream_id: str, due_ms: int) -> str | None:
        """`schedule([job], due_ms, poke=True)` for the job a provider's id names, found
        and poked in one round trip; returns its id, or None when it names none of ours."""
        before, after = self.keys.job_poke("\n").split("\n")
        found = await self._poke_upstream(
            keys=[*self._keys, self.keys.job_by_upstream(provider, upstream_id)],
            args=[due_ms, POKE_SECONDS, before, after],
        )
        return str(found) if found else None

    async def claim(
        self,
        now_ms: int,
        lease_until_ms: int,
        limit: int,
        *,
        ordinary_limit: int | None = None,
        urgent_before_ms: int | None = None,
    ) -> Claimed:
        """Take up to `limit` jobs: urgent ones (due before `urgent_before_ms`) first,
        then, up to `ordinary_limit` in all, jobs merely due and jobs whose claim lapsed.
        A follower keeps some room for urgent work this way even when polls abound."""
        ordinary = limit if ordinary_limit is None else max(0, min(limit, ordinary_limit))
        cutoff = now_ms - 3_600_000 if urgent_before_ms is None else urgent_before_ms
        ids, earliest = await self._claim(
            keys=self._keys, args=[now_ms, lease_until_ms, limit, ordinary, cutoff]
        )
        return Claimed(
            [Claim(job_id, lease_until_ms) for job_id in ids],
            int(float(earliest)) if earliest is not None else None,
        )

    async def release(self, releases: Sequence[Release], *, urgent_ms: int) -> int:
        """End claims: each job is due again at its time (at `urgent_ms` if it was poked
        meanwhile) or dropped. A claim that lapsed and was taken again is left alone."""
        if not releases:
            return 0
        args: list[str | int] = [urgent_ms]
        for release in releases:
            due = "" if release.due_ms is None else release.due_ms
            args += [release.job_id, release.token, due]
        return int(await self._release(keys=self._keys, args=args))

    async def state(self, job_id: str) -> str | None:
        """'due' or 'claimed' while the job is followed, else None (for inspection)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zscore(self.keys.follow_due, job_id)
            pipe.zscore(self.keys.follow_claimed, job_id)
            due, claimed = await pipe.execute()
        if claimed is not None:
            return "claimed"
        return "due" if due is not None else None

    async def sizes(self) -> tuple[int, int]:
        """How many jobs wait for their next step, and how many are being stepped."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zcard(self.keys.follow_due)
            pipe.zcard(self.keys.follow_claimed)
            due, claimed = await pipe.execute()
        return int(due), int(claimed)
