"""ASGI middleware: request ids and access logs.

Written as plain ASGI (not Litestar's `AbstractMiddleware`) so it also wraps
responses produced by exception handlers and streaming bodies.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from service.errors import TooSlow
from service.logs import request_id_var

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Message, Receive, ReceiveMessage, Scope, Send

REQUEST_ID_HEADER = "x-request-id"
_ACCEPTABLE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

access_logger = logging.getLogger("service.access")


def new_request_id() -> str:
    # Unique, not secret: Python's own generator (reseeded in each forked child)
    # costs no system call, where `secrets` reads the kernel's on every request.
    return f"req_{random.getrandbits(96):024x}"


def request_id_middleware(app: ASGIApp) -> ASGIApp:
    """Take the caller's X-Request-ID when it is sane, else make one; echo it back."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # type: ignore[comparison-overlap]
            await app(scope, receive, send)
            return
        incoming = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
                break
        request_id = incoming if incoming and _ACCEPTABLE_ID.match(incoming) else new_request_id()
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((REQUEST_ID_HEADER.encode(), request_id.encode()))
                message["headers"] = headers
            await send(message)

        try:
            await app(scope, receive, send_with_id)
        finally:
            path = scope.get("path", "")
            # Health probes run every few seconds; keep them out of the info stream.
            level = logging.DEBUG if path in ("/health", "/ready") else logging.INFO
            access_logger.log(
                level,
                "request",
                extra={
                    "method": scope.get("method"),
                    "path": path,
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                },
            )
            request_id_var.reset(token)

    return middleware


@dataclass(frozen=True, slots=True)
class BodyPace:
    """How long a caller may take over its request body (`body_pacing_middleware`)."""

    total_seconds: float
    idle_seconds: float
    min_bytes_per_second: int
    grace_seconds: float


class _PacedBody:
    """One request's body reads, watched by a single timer.

    A timer per read (`asyncio.timeout` around each `receive()`) cost a few
    percent of a small request's CPU, though almost every small body has
    arrived before the app reads it. One timer is armed at the first read
    and checks the rules when it fires: if the app is not waiting for the body
    then, the next read arms it again; if the wait has not yet broken a rule,
    it sleeps until the earliest moment one could be broken.
    """

    __slots__ = (
        "_complete",
        "_pace",
        "_receive",
        "_received",
        "_started",
        "_task",
        "_timer",
        "_verdict",
        "_waiting_since",
    )

    def __init__(self, receive: Receive, pace: BodyPace) -> None:
        self._pace = pace
        self._receive = receive
        self._started: float | None = None
        self._received = 0
        self._complete = False
        self._waiting_since: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[Any] | None = None
        self._verdict: str | None = None

    async def receive(self) -> ReceiveMessage:
        if self._complete:
            return await self._receive()
        loop = asyncio.get_running_loop()
        pace = self._pace
        now = loop.time()
        started = self._started
        if started is None:
            started = self._started = now
        if now >= started + pace.total_seconds:
            raise TooSlow(self._too_long())
        self._waiting_since = now
        self._task = task = asyncio.current_task()
        if self._timer is None:
            self._timer = loop.call_at(self._deadline(started, now), self._check)
        try:
            message = await self._receive()
        except asyncio.CancelledError:
            if self._verdict is not None and task is not None and task.uncancel() == 0:
                raise TooSlow(self._verdict) from None
            raise
        finally:
            self._waiting_since = None
        if message["type"] == "http.request":
            self._received += len(message.get("body", b""))
            self._complete = not message.get("more_body", False)
            elapsed = loop.time() - started
            if (
                not self._complete
                and elapsed > pace.grace_seconds
                and self._received < pace.min_bytes_per_second * elapsed
            ):
                raise TooSlow(
                    f"The request body arrives at {self._received / elapsed:.0f} bytes/s; "
                    f"this service needs at least {pace.min_bytes_per_second} bytes/s"
                )
        else:
            self._complete = True  # a disconnect: nothing more will come
        if self._complete:
            self.stop()
        return message

    def _deadline(self, started: float, waiting_since: float) -> float:
        pace = self._pace
        return min(waiting_since + pace.idle_seconds, started + pace.total_seconds)

    def _too_long(self) -> str:
        return f"The request body took longer than {self._pace.total_seconds:g} s to arrive"

    def _check(self) -> None:
        self._timer = None
        started, since = self._started, self._waiting_since
        if started is None or since is None or self._complete or self._task is None:
            return  # the app is not waiting for the body: its next read arms the timer
        loop = asyncio.get_running_loop()
        deadline = self._deadline(started, since)
        if loop.time() < deadline:
            self._timer = loop.call_at(deadline, self._check)
            return
        pace = self._pace
        if since + pace.idle_seconds <= started + pace.total_seconds:
            self._verdict = f"The request body stalled (nothing for {pace.idle_seconds:g} s)"
        else:
            self._verdict = self._too_long()
        self._task.cancel()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def body_pacing_middleware(app: ASGIApp, pace: BodyPace) -> ASGIApp:
    """Bound how long a caller may take to send its body (slowloris and trickling uploads).

    The body must arrive within `total_seconds` of its first read, no wait for
    a chunk may exceed `idle_seconds`, and after `grace_seconds` (a slow start:
    TCP ramp-up, a busy client) the average rate must stay above
    `min_bytes_per_second`. Breaking a rule raises TooSlow (408) inside the
    app, where the read happens, so the handler stops, its scratch files go and
    nothing is stored.
    """

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # type: ignore[comparison-overlap]
            await app(scope, receive, send)
            return
        body = _PacedBody(receive, pace)
        try:
            await app(scope, body.receive, send)
        finally:
            body.stop()

    return middleware
