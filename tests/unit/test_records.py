"""Conditional writes (service.store.records) against a real Redis."""

from __future__ import annotations

import pytest
from pydantic import Field
from redis.asyncio import Redis

from service.domain.records import Record
from service.store.records import (
    LimitReached,
    RecordGone,
    Write,
    WriteConflict,
    commit,
    create_records,
    delete_record,
    get_record,
    serialize,
    update_record,
)


class Thing(Record):
    n: int = 0
    status: str = "validating"
    by: list[str] = Field(default_factory=list)


def thing(record_id: str, **values: object) -> Thing:
    return Thing(id=record_id, tenant="t", created_at="2026-12-01T00:00:00Z", **values)


@pytest.fixture
async def redis(redis_server):  # type: ignore[no-untyped-def]
    client = Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    await client.aclose()


async def test_an_update_reads_again_when_someone_else_wrote_first(
    redis: Redis, redis_server
) -> None:
    await create_records(redis, [("r:1", thing("1"))])
    seen: list[int] = []

    def bump(record: Thing) -> Thing:
        seen.append(record.n)
        if len(seen) == 1:
            # Another writer lands between our read and our write.
            with redis_server.client() as other:
                other.set("r:1", serialize(thing("1", n=10, by=["other"])))
        record.n += 1
        record.by = [*record.by, "us"]
        return record

    updated = await update_record(redis, "r:1", Thing, bump)
    # Our first write was refused; the change ran again on the other writer's record.
    assert seen == [0, 10]
    assert (updated.n, updated.by) == (11, ["other", "us"])
    assert await get_record(redis, "r:1", Thing) == updated


async def test_a_deleted_record_cannot_come_back(redis: Redis) -> None:
    await create_records(redis, [("r:2", thing("2"))], [("SADD", "idx", "2")])
    read_before_delete = await redis.get("r:2")
    gone = await delete_record(redis, "r:2", Thing, ops=lambda r: [("SREM", "idx", r.id)])
    assert gone.status == "validating"
    assert await get_record(redis, "r:2", Thing) is None
    assert await redis.smembers("idx") == set()
    # A late writer that read the record before the delete: refused.
    with pytest.raises(WriteConflict):
        await commit(
            redis, [Write("r:2", read_before_delete, serialize(thing("2", status="ready")))]
        )
    # Re-creating under the same key: refused while the tombstone lasts.
    with pytest.raises(WriteConflict):
        await create_records(redis, [("r:2", thing("2", status="ready"))])
    with pytest.raises(RecordGone):
        await update_record(redis, "r:2", Thing, lambda r: r)
    assert 0 < await redis.ttl("r:2")


async def test_nothing_is_written_when_one_precondition_fails(redis: Redis) -> None:
    await create_records(redis, [("r:3", thing("3"))])
    with pytest.raises(WriteConflict):
        await create_records(
            redis, [("r:4", thing("4")), ("r:3", thing("3"))], [("SADD", "idx2", "4")]
        )
    assert await redis.get("r:4") is None
    assert await redis.smembers("idx2") == set()


async def test_a_size_guard_caps_a_set_atomically(redis: Redis) -> None:
    for n in range(3):
        await create_records(
            redis, [(f"e:{n}", thing(str(n)))], [("ZADD", "mine", n, str(n))], limits=[("mine", 3)]
        )
    with pytest.raises(LimitReached):
        await create_records(
            redis, [("e:9", thing("9"))], [("ZADD", "mine", 9, "9")], limits=[("mine", 3)]
        )
    assert await redis.get("e:9") is None
    assert await redis.zcard("mine") == 3
