"""One Redis connection that carries every task's plain commands at once.

redis-py lends each command a connection of its own from its pool: take the
pool's lock, check the connection, write, read the one reply, give it back.
Under load that is most of a command's CPU, and one socket write per command.
`SharedRedis` sends the commands that need no connection of their own (no
transaction, no blocking wait, no subscription: `SHARED_COMMANDS`) down one
connection instead. Commands queued in one pass of the event loop go out in
one write; Redis answers in order, and the connection's protocol hands each
reply, as it is parsed, to the command that is first in line. (A reader task
in between cost two more passes of the loop per command: in two paired
1,000-job runs the webhooks' leg after success grew by about 100 ms at the
median.)

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
from collections import deque
from typing import Any, cast

import hiredis
from redis._parsers.base import BaseParser
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from service.store.connection import hiredis_pack, hiredis_packs

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


class _Replies(asyncio.Protocol):
    """One connection's incoming side: replies are parsed the moment they arrive and
    handed to the commands first in line, with no reader task in between."""

    def __init__(self, line: _Line, parser: hiredis.Reader) -> None:
        self._line = line
        self._parser = parser

    def data_received(self, data: bytes) -> None:
        line = self._line
        if line.replies is not self:
            return  # a connection the line has already dropped
        parser, waiting = self._parser, line.waiting
        parser.feed(data)
        try:
            while (reply := parser.gets()) is not _INCOMPLETE:
                if not waiting:
                    raise InvalidResponse("Redis sent a reply nobody asked for")
                future, _ = waiting.popleft()
                if not future.done():  # its caller stopped waiting: the reply is dropped
                    future.set_result(reply)
        except RedisError as exc:
            line.drop(self, exc)

    def eof_received(self) -> bool:
        self._line.drop(self, RedisConnectionError("Connection closed by server."))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        reason = f"Error while reading from socket: {exc}" if exc else "Connection closed."
        self._line.drop(self, RedisConnectionError(reason))


class _Line:
    """The shared connection and its queue of waiting commands.

    After redis-py's handshake the line hands the connection's transport to a
    `_Replies` protocol of its own. One timer watches the oldest waiting command.
    """

    def __init__(self, redis: Redis) -> None:
        self._pool = redis.connection_pool
        self._timeout: float | None = self._pool.connection_kwargs.get("socket_timeout")
        self._connection: AbstractConnection | None = None
        self._transport: asyncio.WriteTransport | None = None
        self.replies: _Replies | None = None
        # Every command sent or queued for this pass's write, oldest first, with when.
        self.waiting: deque[tuple[asyncio.Future[Any], float]] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._connecting: asyncio.Lock | None = None
        self._outgoing: list[bytes] = []

    async def send(self, packed: bytes) -> Any:
        transport = self._transport
        if transport is None:
            transport = await self._connect()
        loop = asyncio.get_running_loop()
        now = loop.time()
        future: asyncio.Future[Any] = loop.create_future()
        self.waiting.append((future, now))
        if not self._outgoing:
            loop.call_soon(self._flush)
        self._outgoing.append(packed)
        if self._timer is None and self._timeout is not None:
            self._timer = loop.call_at(now + self._timeout, self._check_late)
        reply = await future
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    def _flush(self) -> None:
        outgoing, self._outgoing = self._outgoing, []
        if self._transport is not None and outgoing:
            self._transport.writelines(outgoing)

    async def _connect(self) -> asyncio.WriteTransport:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._transport is not None:
                return self._transport
            connection = self._pool.make_connection()
            await connection.connect()  # handshake: AUTH, SELECT, CLIENT SETNAME
            writer = connection._writer
            if writer is None:
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
            transport = cast("asyncio.WriteTransport", writer.transport)
            replies = _Replies(self, hiredis.Reader(**options))
            self._connection, self._transport, self.replies = connection, transport, replies
            # redis-py's reader has taken the handshake's replies; the rest come here.
            transport.set_protocol(replies)
            return transport

    def _check_late(self) -> None:
        """The timer: fail the line when its oldest command has waited too long."""
        self._timer = None
        if not self.waiting or self._timeout is None or self.replies is None:
            return
        loop = asyncio.get_running_loop()
        deadline = self.waiting[0][1] + self._timeout
        if loop.time() < deadline:
            self._timer = loop.call_at(deadline, self._check_late)
            return
        transport = self._transport
        stuck = "writing to" if transport and transport.get_write_buffer_size() else "reading from"
        self.drop(self.replies, RedisTimeoutError(f"Timeout {stuck} socket"))

    def drop(self, replies: _Replies | None, error: Exception) -> None:
        """Forget the connection `replies` reads and fail everything that waits on it."""
        if replies is not self.replies:
            return  # an older connection, already dropped
        connection, self._connection, self._transport = self._connection, None, None
        self.replies = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        waiting, self.waiting = self.waiting, deque()
        self._outgoing = []
        for future, _ in waiting:
            if not future.done():
                future.set_exception(error)
        if connection is not None:
            connection._close()

    async def close(self) -> None:
        self.drop(self.replies, RedisConnectionError("The client was closed"))


class SharedRedis(Redis):
    """redis-py's client, with `SHARED_COMMANDS` sent down one shared connection."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        kwargs = self.connection_pool.connection_kwargs
        # Other encodings keep redis-py's way, through the pool.
        packs = hiredis_packs(
            str(kwargs.get("encoding", "utf-8")), str(kwargs.get("encoding_errors", "strict"))
        )
        self._line = _Line(self) if packs else None

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        name = args[0]
        line = self._line
        if line is None or name not in SHARED_COMMANDS or not options.keys() <= _KNOWN_OPTIONS:
            return await super().execute_command(*args, **options)
        packed = hiredis_pack(args)
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
