"""The service's Redis connections: they never lose a task's cancellation, and
they spend less CPU per command than redis-py's own.

redis-py 5 bounds each write to the socket with `asyncio.wait_for(write,
socket_timeout)`. On Python 3.11, when the write finishes in the same pass of
the event loop as a `cancel()` aimed at the calling task, `wait_for` returns the
write's result and the cancellation is gone: the task carries on as though
nobody had asked it to stop. Any loop that talks to Redis can then outlive its
`cancel()`, and whoever awaits it waits forever. The dataset validation's
progress reporter did in about one run in six of its test, and the dataset
stayed `validating` until the worker shut down. (Python 3.12 rebuilt `wait_for`
on `asyncio.timeout`, which keeps the request.)

The connections made here write without `wait_for`. A write that the socket
takes at once (the transport is under its high-water mark) needs no deadline
at all; one that must wait for the socket to drain waits under
`asyncio.timeout(socket_timeout)`, which keeps a cancellation. Reads are
redis-py's, already bounded with `asyncio.timeout`.

Two more costs of redis-py's connections fall away, measured by
`bench/bench_redis_client.py`:

- Commands are packed by hiredis in C (redis-py's synchronous client does the
  same) rather than in Python, argument by argument. A sync step's write with
  a hundred provider events has 400 arguments.
- Each time the pool lends a connection, redis-py checks that nothing is left
  to read on it by starting a read under a zero timeout: one more pass of the
  event loop and a cancelled read per command. Here the check looks at what
  the connection has already received and asks redis-py only when there is
  something, or the stream has ended.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

from redis.asyncio import ConnectionPool
from redis.asyncio.connection import (
    AbstractConnection,
    Connection,
    SSLConnection,
    UnixDomainSocketConnection,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError
from redis.exceptions import TimeoutError as RedisTimeoutError

_hiredis_pack: Callable[[tuple[Any, ...]], bytes] | None
try:
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # hiredis is optional for redis-py; fall back to its packer
    _hiredis_pack = None


def hiredis_packs(encoding: str, errors: str) -> bool:
    """Whether hiredis may pack a client's commands: it is installed, and the client
    encodes text as strict UTF-8, which is what hiredis writes."""
    return (
        _hiredis_pack is not None
        and encoding.lower().replace("_", "-") in ("utf-8", "utf8")
        and errors == "strict"
    )


def hiredis_pack(args: tuple[Any, ...]) -> bytes:
    """One command as RESP, packed in C (check `hiredis_packs` first); a value Redis
    cannot store (None, a bool, a list) raises DataError, as redis-py's packer does."""
    if _hiredis_pack is None:
        raise DataError("hiredis is not installed")
    try:
        return _hiredis_pack(args)
    except TypeError as exc:
        raise DataError(str(exc)) from None


class _LeanConnection(AbstractConnection):
    def pack_command(self, *args: Any) -> list[bytes]:
        encoder = self.encoder
        if not hiredis_packs(encoder.encoding, encoder.encoding_errors):
            return super().pack_command(*args)
        # A command name of two words ("SCRIPT LOAD") goes as two arguments.
        name = args[0]
        if isinstance(name, str):
            args = (*name.encode().split(), *args[1:])
        elif b" " in name:
            args = (*name.split(), *args[1:])
        return [hiredis_pack(args)]

    async def send_packed_command(
        self, command: bytes | str | Iterable[bytes], check_health: bool = True
    ) -> None:
        if not self.is_connected:
            await self.connect()  # bounded by socket_connect_timeout
        elif check_health:
            await self.check_health()  # its PING comes back here without a check
        if isinstance(command, str):
            command = command.encode()
        if isinstance(command, bytes):
            command = [command]
        writer = self._writer
        if writer is None:
            raise RedisConnectionError("Connection closed before the write")
        try:
            writer.writelines(command)
            transport = writer.transport
            if transport.get_write_buffer_size() <= transport.get_write_buffer_limits()[1]:
                # Under the high-water mark the stream is not paused, so drain()
                # returns at once; it still raises if the connection was lost.
                await writer.drain()
            else:
                async with asyncio.timeout(self.socket_timeout):
                    await writer.drain()
        except TimeoutError:
            await self.disconnect(nowait=True)
            raise RedisTimeoutError("Timeout writing to socket") from None
        except OSError as exc:
            await self.disconnect(nowait=True)
            raise RedisConnectionError(f"Error while writing to socket: {exc}") from exc
        except BaseException:
            # Part of the command may be on the wire: the connection cannot be reused.
            await self.disconnect(nowait=True)
            raise

    async def can_read_destructive(self) -> bool:
        """True when the connection holds unread data (the pool then reconnects it).

        A reply always comes back in full before the connection returns to the
        pool: redis-py drops a connection whose read failed or was cancelled. So
        leftover data is the exception, and a connection with nothing buffered
        and an open stream needs no read to prove it.
        """
        reader = self._reader
        buffered = getattr(reader, "_buffer", None)  # asyncio.StreamReader's
        if (
            reader is None
            or buffered is None
            or buffered
            or reader.at_eof()
            or reader.exception() is not None
        ):
            return bool(await super().can_read_destructive())  # reads, or raises
        return False


class TcpConnection(_LeanConnection, Connection):
    """`redis://`"""


class TlsConnection(_LeanConnection, SSLConnection):
    """`rediss://`"""


class UnixConnection(_LeanConnection, UnixDomainSocketConnection):
    """`unix://`"""


_LEAN: dict[type[AbstractConnection], type[AbstractConnection]] = {
    Connection: TcpConnection,
    SSLConnection: TlsConnection,
    UnixDomainSocketConnection: UnixConnection,
}


def lean_connections(pool: ConnectionPool) -> ConnectionPool:
    """Make the pool's future connections this module's kind for its URL's scheme.

    Call it right after building the pool, before any connection exists.
    """
    chosen = pool.connection_class
    if chosen in _LEAN.values():
        return pool
    try:
        pool.connection_class = _LEAN[chosen]
    except KeyError:
        raise TypeError(f"no lean variant of {chosen.__name__}") from None
    return pool
