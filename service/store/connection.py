"""Redis connections that never lose a task's cancellation.

redis-py 5 bounds each write to the socket with `asyncio.wait_for(write,
socket_timeout)`. On Python 3.11, when the write finishes in the same pass of
the event loop as a `cancel()` aimed at the calling task, `wait_for` returns the
write's result and the cancellation is gone: the task carries on as though
nobody had asked it to stop. Any loop that talks to Redis can then outlive its
`cancel()`, and whoever awaits it waits forever. The dataset validation's
progress reporter did in about one run in six of its test, and the dataset
stayed `validating` until the worker shut down. (Python 3.12 rebuilt `wait_for`
on `asyncio.timeout`, which keeps the request.)

The connections made here bound the write with `asyncio.timeout` themselves and
let redis-py see no timeout for it, so the same limit holds and a cancellation
always reaches the caller. Reads are untouched: redis-py already bounds them
with `asyncio.timeout`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from redis.asyncio import ConnectionPool
from redis.asyncio.connection import (
    AbstractConnection,
    Connection,
    SSLConnection,
    UnixDomainSocketConnection,
)
from redis.exceptions import TimeoutError as RedisTimeoutError


class _CancellableWrites(AbstractConnection):
    async def send_packed_command(
        self, command: bytes | str | Iterable[bytes], check_health: bool = True
    ) -> None:
        if not self.is_connected:
            await self.connect()  # bounded by socket_connect_timeout, as before
        limit = self.socket_timeout
        if not limit:
            await super().send_packed_command(command, check_health)
            return
        # A connection serves one command at a time, so lending it "no timeout"
        # for the write cannot leak into anyone else's read. A health check's
        # PING nests in here and shares this limit.
        self.socket_timeout = None
        try:
            async with asyncio.timeout(limit):
                await super().send_packed_command(command, check_health)
        except TimeoutError as exc:
            raise RedisTimeoutError("Timeout writing to socket") from exc
        finally:
            self.socket_timeout = limit


class TcpConnection(_CancellableWrites, Connection):
    """`redis://`"""


class TlsConnection(_CancellableWrites, SSLConnection):
    """`rediss://`"""


class UnixConnection(_CancellableWrites, UnixDomainSocketConnection):
    """`unix://`"""


_CANCELLABLE: dict[type[AbstractConnection], type[AbstractConnection]] = {
    Connection: TcpConnection,
    SSLConnection: TlsConnection,
    UnixDomainSocketConnection: UnixConnection,
}


def keep_cancellations(pool: ConnectionPool) -> ConnectionPool:
    """Make the pool's future connections the cancellable kind for its URL's scheme.

    Call it right after building the pool, before any connection exists.
    """
    chosen = pool.connection_class
    if chosen in _CANCELLABLE.values():
        return pool
    try:
        pool.connection_class = _CANCELLABLE[chosen]
    except KeyError:
        raise TypeError(f"no cancellable variant of {chosen.__name__}") from None
    return pool
