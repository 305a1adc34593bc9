"""One Redis connection that carries every task's plain commands at once.

redis-py lends each command a connection of its own from its pool: take the
pool's lock, check the connection, write, read the one reply, give it back.
Under load that is most of a command's CPU, and one socket write per command.
`SharedRedis` sends the commands that need no connection of their own (no
transaction, no blocking wait, no subscription: `SHARED_COMMANDS`) down one
connection instead. Commands queued in one pass of the event loop go out in
one write; Redis answers in order, and one reader task hands each reply to
the command that is first in line.

A task cancelled while it waits simply stops waiting: its reply is read and
dropped, and the line stays in step, so a cancellation can never leave a
reply for somebody else to find. When the connection fails (Redis closed it,
the socket broke, or the oldest command has waited longer than the pool's
`socket_timeout`), every waiting command fails with redis-py's
`ConnectionError` or `TimeoutError`, as it would have on its own connection,
and the next command connects again.

Everything else (pipelines, transactions, `SCRIPT LOAD`, commands with
options this path does not know) takes redis-py's own way through the pool.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections import deque
from typing import Any

import hiredis
from redis._parsers.base import BaseParser
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError, InvalidResponse, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

# Commands that leave no state on their connection and never block it. EVALSHA runs
# the stores' scripts, none of which blocks; a NOSCRIPT answer comes back as
# NoScriptError, and redis-py's Script then loads the script through the pool.
SHARED_COMMANDS = frozenset(
    {
        "GET",
        "MGET",
        "SET",
        "DEL",
        "EXISTS",
        "INCR",
        "EXPIRE",
        "HGET",
        "HMGET",
        "HGETALL",
        "HKEYS",
        "HVALS",
        "HLEN",
        "HSET",
        "SMEMBERS",
        "ZRANGE",
        "ZCOUNT",
        "ZSCORE",
        "ZREM",
        "LRANGE",
        "LLEN",
        "EVALSHA",
    }
)
# Options redis-py's command methods pass that this path understands: `keys` (for
# its client-side cache, which is off) and EMPTY_RESPONSE (MGET's answer to an error).
_KNOWN_OPTIONS = frozenset({"keys", "EMPTY_RESPONSE"})
_INCOMPLETE = object()
_READ_SIZE = 1 << 16


class _Line:
    """The shared connection, its queue of waiting commands and its reader."""

    def __init__(self, redis: Redis) -> None:
        self._pool = redis.connection_pool
        self._timeout: float | None = self._pool.connection_kwargs.get("socket_timeout")
        self._connection: AbstractConnection | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reading: asyncio.Task[None] | None = None
        # Every command written or about to be, oldest first, with when it joined.
        self._waiting: deque[tuple[asyncio.Future[Any], float]] = deque()
        self._outgoing: list[bytes] = []
        self._connecting: asyncio.Lock | None = None

    async def send(self, packed: bytes) -> Any:
        if self._writer is None:
            await self._connect()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._waiting.append((future, time.monotonic()))
        if not self._outgoing:
            loop.call_soon(self._flush)
        self._outgoing.append(packed)
        reply = await future
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    def _flush(self) -> None:
        if self._writer is not None and self._outgoing:
            self._writer.writelines(self._outgoing)
        self._outgoing = []

    async def _connect(self) -> None:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._writer is not None:
                return
            connection = self._pool.make_connection()
            await connection.connect()  # handshake: AUTH, SELECT, CLIENT SETNAME
            reader, writer = connection._reader, connection._writer
            if reader is None or writer is None:
                raise RedisConnectionError("Redis closed the connection during its handshake")
            encoder = connection.encoder
            options: dict[str, Any] = {
                "protocolError": InvalidResponse,
                "replyError": BaseParser.parse_error,
                "notEnoughData": _INCOMPLETE,
            }
            if encoder.decode_responses:
                options["encoding"] = encoder.encoding
                options["errors"] = encoder.encoding_errors
            self._connection, self._writer = connection, writer
            self._reading = asyncio.create_task(
                self._read(reader, hiredis.Reader(**options)), name="redis shared reader"
            )

    async def _read(self, reader: asyncio.StreamReader, parser: hiredis.Reader) -> None:
        try:
            while True:
                data = await self._receive(reader)
                if not data:
                    raise RedisConnectionError("Connection closed by server.")
                parser.feed(data)
                while (reply := parser.gets()) is not _INCOMPLETE:
                    if not self._waiting:
                        raise InvalidResponse("Redis sent a reply nobody asked for")
                    future, _ = self._waiting.popleft()
                    if not future.done():
                        future.set_result(reply)
        except asyncio.CancelledError:
            self._drop(RedisConnectionError("The connection was closed"))
            raise
        except RedisError as exc:
            self._drop(exc)
        except OSError as exc:
            self._drop(RedisConnectionError(f"Error while reading from socket: {exc}"))
        except Exception as exc:  # a bug here must not leave anybody waiting forever
            self._drop(RedisConnectionError(f"The shared connection failed: {exc!r}"))
            raise

    async def _receive(self, reader: asyncio.StreamReader) -> bytes:
        """The next bytes from Redis; fails when the oldest command has waited too long."""
        while True:
            if self._timeout is None:
                return await reader.read(_READ_SIZE)
            wait = self._timeout
            if self._waiting:
                wait = self._waiting[0][1] + self._timeout - time.monotonic()
                if wait <= 0:
                    raise RedisTimeoutError(f"Timeout {self._stuck_at()} socket")
            try:
                async with asyncio.timeout(wait):
                    return await reader.read(_READ_SIZE)
            except TimeoutError:
                continue  # the loop decides whether anybody has waited too long

    def _stuck_at(self) -> str:
        """Where a late reply is held: our write still queued, or Redis's answer."""
        writer = self._writer
        if writer is not None and writer.transport.get_write_buffer_size() > 0:
            return "writing to"
        return "reading from"

    def _drop(self, error: Exception) -> None:
        """Forget the connection and fail everything that waits on it."""
        connection, self._connection, self._writer = self._connection, None, None
        self._reading = None
        self._outgoing = []
        waiting, self._waiting = self._waiting, deque()
        for future, _ in waiting:
            if not future.done():
                future.set_exception(error)
        if connection is not None:
            connection._close()

    async def close(self) -> None:
        reading = self._reading
        if reading is not None:
            reading.cancel()
            try:
                await reading
            except asyncio.CancelledError:
                pass


class SharedRedis(Redis):
    """redis-py's client, with `SHARED_COMMANDS` sent down one shared connection."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        kwargs = self.connection_pool.connection_kwargs
        # hiredis packs str arguments as UTF-8: other encodings keep redis-py's way.
        utf8 = str(kwargs.get("encoding", "utf-8")).lower().replace("_", "-") in ("utf-8", "utf8")
        strict = kwargs.get("encoding_errors", "strict") == "strict"
        self._line = _Line(self) if utf8 and strict else None

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        name = args[0]
        line = self._line
        if line is None or name not in SHARED_COMMANDS or not options.keys() <= _KNOWN_OPTIONS:
            return await super().execute_command(*args, **options)
        try:
            packed = hiredis.pack_command(args)
        except TypeError as exc:  # None, a bool, a list: what redis-py refuses too
            raise DataError(str(exc)) from None
        options.pop("keys", None)
        try:
            response = await line.send(packed)
        except ResponseError:
            if "EMPTY_RESPONSE" in options:
                return options["EMPTY_RESPONSE"]
            raise
        options.pop("EMPTY_RESPONSE", None)
        callback = self.response_callbacks.get(name)
        if callback is None:
            return response
        parsed = callback(response, **options)
        return await parsed if inspect.isawaitable(parsed) else parsed

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        if self._line is not None:
            await self._line.close()
        await super().aclose(close_connection_pool)
