"""Bounded concurrency across processes: a few slots per tenant, kept in Redis.

A slot set is a sorted set of holder -> expiry time. Taking a slot first drops
expired holders, so a process that died holding one gives it back on its own
after `ttl` seconds; a live holder releases it explicitly. The clock is
Redis's own, so API and worker hosts need not agree on the time.
"""

from __future__ import annotations

from redis.asyncio import Redis

# take_slot(key, holder, limit, ttl): 1 when `holder` now has a slot (or had one).
TAKE_SLOT_LUA = """
local function take_slot(key, holder, limit, ttl)
  local now = redis.call('TIME')
  local seconds = tonumber(now[1]) + tonumber(now[2]) / 1000000
  redis.call('ZREMRANGEBYSCORE', key, '-inf', seconds)
  if redis.call('ZSCORE', key, holder) then
    redis.call('ZADD', key, seconds + tonumber(ttl), holder)
    return 1
  end
  if redis.call('ZCARD', key) >= tonumber(limit) then
    return 0
  end
  redis.call('ZADD', key, seconds + tonumber(ttl), holder)
  redis.call('EXPIRE', key, math.ceil(tonumber(ttl)) + 60)
  return 1
end
"""

_TAKE = TAKE_SLOT_LUA + "return take_slot(KEYS[1], ARGV[1], ARGV[2], ARGV[3])"


class Slots:
    def __init__(self, redis: Redis, key: str, *, limit: int, ttl: float) -> None:
        self.redis = redis
        self.key = key
        self.limit = limit
        self.ttl = ttl
        self._take = redis.register_script(_TAKE)

    async def take(self, holder: str) -> bool:
        """True when `holder` now has a slot (or already had one)."""
        return bool(await self._take(keys=[self.key], args=[holder, self.limit, self.ttl]))

    async def release(self, holder: str) -> None:
        await self.redis.zrem(self.key, holder)

    def release_op(self, holder: str) -> tuple[str, str, str]:
        """The release as an operation for a `records.commit` the holder makes anyway."""
        return ("ZREM", self.key, holder)
