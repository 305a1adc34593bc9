"""Plain commands from many tasks share one Redis connection and each gets its own reply."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Iterator

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from service import resources
from service.resources import redis_client
from tests.fake_redis import answer_handshake, fake_redis


def connections_received(redis_server) -> int:  # type: ignore[no-untyped-def]
    with redis_server.client() as admin:
        return int(admin.info("stats")["total_connections_received"])


async def test_many_tasks_at_once_get_their_own_replies_over_one_connection(
    settings, redis_server
) -> None:
    client = redis_client(settings)
    try:
        await asyncio.gather(*(client.set(f"k{i}", f"value {i} 日本") for i in range(300)))
        await client.hset("h", mapping={"a": "1", "b": "2"})
        before = connections_received(redis_server)

        async def one(i: int) -> object:
            match i % 4:
                case 0:
                    return await client.get(f"k{i}")
                case 1:
                    return await client.mget([f"k{i}", "missing", f"k{i - 1}"])
                case 2:
                    return await client.hgetall("h")
                case _:
                    return await client.exists(f"k{i}", "missing")

        replies = await asyncio.gather(*(one(i) for i in range(2000)))
        for i, reply in enumerate(replies):
            expected: object = {
                0: f"value {i} 日本",
                1: [f"value {i} 日本", None, f"value {i - 1} 日本"],
                2: {"a": "1", "b": "2"},
                3: 1,
            }[i % 4]
            if i >= 300 and i % 4 in (0, 1, 3):
                expected = {0: None, 1: [None, None, None], 3: 0}[i % 4]
            assert reply == expected, i
        # The pool would have opened one connection per command in flight.
        assert connections_received(redis_server) - before == 1
    finally:
        await client.aclose()


async def test_tasks_cancelled_while_they_wait_leave_the_others_their_own_replies(
    settings,
) -> None:
    client = redis_client(settings)
    rng = random.Random(7)
    try:
        await asyncio.gather(*(client.set(f"k{i}", str(i)) for i in range(200)))
        for _ in range(20):
            tasks = [asyncio.create_task(client.get(f"k{i}")) for i in range(200)]
            await asyncio.sleep(0)  # sent, or about to be
            cancelled = {i for i in range(200) if rng.random() < 0.5}
            for i in cancelled:
                tasks[i].cancel()
            await asyncio.wait(tasks)
            for i, task in enumerate(tasks):
                if i in cancelled and task.cancelled():
                    continue
                assert task.result() == str(i)
        assert await client.get("k5") == "5"
    finally:
        await client.aclose()


async def test_an_error_reply_fails_only_its_own_command(settings) -> None:
    client = redis_client(settings)
    try:
        await client.set("text", "x")
        await client.hset("hash", "f", "v")
        results = await asyncio.gather(
            client.get("text"), client.get("hash"), client.hget("hash", "f"),
            return_exceptions=True,
        )  # fmt: skip
        assert results[0] == "x"
        assert isinstance(results[1], ResponseError)
        assert "WRONGTYPE" in str(results[1])
        assert results[2] == "v"
    finally:
        await client.aclose()


async def test_a_script_redis_forgot_is_loaded_again(settings) -> None:
    client = redis_client(settings)
    try:
        script = client.register_script("return redis.call('GET', KEYS[1]) .. ARGV[1]")
        await client.set("k", "a")
        assert await script(keys=["k"], args=["b"]) == "ab"
        await client.script_flush()
        assert await script(keys=["k"], args=["c"]) == "ac"
    finally:
        await client.aclose()


async def test_a_restarted_redis_fails_the_waiting_commands_then_serves_again(
    settings, redis_server
) -> None:
    client = redis_client(settings)
    try:
        await client.set("k", "before")
        redis_server.stop()
        with pytest.raises(RedisConnectionError):
            await client.get("k")
        redis_server.start()
        assert await client.get("k") == "before"  # kept by the append-only file
    finally:
        await client.aclose()


@pytest.fixture
def silent_server() -> Iterator[str]:
    """Answers the connection's handshake like Redis, then never answers a GET."""

    def serve(conn: socket.socket, buffer: bytearray) -> bool:
        answer_handshake(conn, buffer, ignore=b"GET")
        return True

    with fake_redis(serve) as url:
        yield url


async def test_a_reply_that_never_comes_times_out_and_the_next_command_connects_again(
    settings, silent_server, monkeypatch
) -> None:
    monkeypatch.setattr(resources, "REDIS_SOCKET_TIMEOUT", 0.3)
    client = redis_client(settings.model_copy(update={"redis_url": silent_server}))
    try:
        started = asyncio.get_running_loop().time()
        waiting = [asyncio.create_task(client.get(f"k{i}")) for i in range(5)]
        done, _ = await asyncio.wait(waiting, timeout=5)
        assert len(done) == 5
        for task in waiting:
            with pytest.raises(RedisTimeoutError, match="reading"):
                task.result()
        assert asyncio.get_running_loop().time() - started < 2
        assert await client.set("k", "v") is True  # a fresh connection
    finally:
        await client.aclose()


async def test_a_value_redis_cannot_store_is_refused_before_it_is_sent(settings) -> None:
    client = redis_client(settings)
    try:
        for bad in (None, True, ["a"]):
            with pytest.raises(DataError):
                await client.set("k", bad)  # type: ignore[arg-type]
        assert await client.get("k") is None  # nothing was written, the line still works
    finally:
        await client.aclose()
