"""The service's Redis clients keep every cancellation and still bound their writes."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Iterator

import pytest
from redis.asyncio.connection import Connection
from redis.exceptions import DataError
from redis.exceptions import TimeoutError as RedisTimeoutError

from service import resources
from service.resources import queue_client, redis_client
from service.store.connection import TcpConnection
from tests.fake_redis import answer_handshake, fake_redis


async def chatty(client) -> None:  # type: ignore[no-untyped-def]
    """What the validation's progress reporter does: sleep, read, write, forever."""
    while True:
        await asyncio.sleep(0.001)
        await client.get("progress")
        await client.set("progress", "1")


@pytest.mark.parametrize("make", [redis_client, queue_client], ids=["records", "queue"])
async def test_a_task_cancelled_while_it_talks_to_redis_always_stops(settings, make) -> None:
    # With redis-py's own connections on Python 3.11, about one cancel in
    # fifteen landed while a write finished and was lost: the task ran on.
    client = make(settings)
    rng = random.Random(20)
    try:
        for attempt in range(300):
            task = asyncio.create_task(chatty(client))
            await asyncio.sleep(rng.random() * 0.004)
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=2)
            assert done, f"attempt {attempt}: the task ignored its cancel() and is still running"
            assert task.cancelled()
        assert await client.get("progress") in {"1", b"1", None}  # the pool still works
    finally:
        await client.aclose(close_connection_pool=True)


@pytest.fixture
def deaf_server() -> Iterator[str]:
    """Answers the connection's handshake like Redis, then stops reading at the first
    command that writes the key `big`."""

    def serve(conn: socket.socket, buffer: bytearray) -> bool:
        if b"\r\nbig\r\n" in buffer:
            return False  # deaf from here on, with the write half read
        answer_handshake(conn, buffer)
        return True

    with fake_redis(serve, receive_buffer=4096) as url:
        yield url


# redis-py drops a connection whose write timed out without waiting for it to
# close (its send buffer never drains), and the stream warns when collected.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_a_write_redis_never_takes_still_times_out(
    settings, deaf_server, monkeypatch
) -> None:
    monkeypatch.setattr(resources, "REDIS_SOCKET_TIMEOUT", 0.3)
    client = redis_client(settings.model_copy(update={"redis_url": deaf_server}))
    try:
        started = asyncio.get_running_loop().time()
        with pytest.raises(RedisTimeoutError, match="writing"):
            async with asyncio.timeout(10):  # a write with no deadline fails here instead
                await client.set("big", "x" * (64 << 20))
        assert asyncio.get_running_loop().time() - started < 5
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    "args",
    [
        ("SET", "k", "v"),
        ("SET", "日本語", "値 with spaces", "EX", 10),
        ("HSET", "h", "f", 1.5, "g", 10**20, "n", -0.0),
        ("SET", "k", b"\x00\xff\r\n"),
        ("SET", "k", memoryview(b"view")),
        ("CLIENT SETINFO", "LIB-NAME", "x"),
        (b"SCRIPT LOAD", "return 1"),
        ("EVALSHA", "f" * 40, 1, "k", *[f"arg{i}" for i in range(500)]),
    ],
)
def test_commands_go_out_byte_for_byte_as_redis_py_packs_them(args) -> None:
    ours = b"".join(TcpConnection().pack_command(*args))
    theirs = b"".join(Connection().pack_command(*args))
    assert ours == theirs


@pytest.mark.parametrize("bad", [None, True, ["a"], {"a": 1}])
def test_a_value_redis_cannot_store_is_refused_before_it_is_sent(bad) -> None:
    with pytest.raises(DataError):
        TcpConnection().pack_command("SET", "k", bad)


async def test_a_connection_left_with_an_unread_reply_is_not_lent_again_as_is(settings) -> None:
    client = redis_client(settings)
    pool = client.connection_pool
    try:
        await client.set("first", "1")
        await client.set("second", "2")
        connection = await pool.get_connection()
        await connection.send_command("GET", "first")  # its reply is never read
        await pool.release(connection)
        await asyncio.sleep(0.05)  # the reply reaches the connection
        assert await client.get("second") == "2"
    finally:
        await client.aclose(close_connection_pool=True)
