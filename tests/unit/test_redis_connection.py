"""The service's Redis clients keep every cancellation and still bound their writes."""

from __future__ import annotations

import asyncio
import random
import socket
import threading
from collections.abc import Iterator

import pytest
from redis.exceptions import TimeoutError as RedisTimeoutError

from service import resources
from service.resources import queue_client, redis_client


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
    """A TCP server that accepts connections and never reads from them."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            accepted.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    listener.close()


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
            await client.set("big", "x" * (64 << 20))
        assert asyncio.get_running_loop().time() - started < 5
    finally:
        await client.aclose()
