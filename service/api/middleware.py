"""ASGI middleware: request ids and access logs.

Written as plain ASGI (not Litestar's `AbstractMiddleware`) so it also wraps
responses produced by exception handlers and streaming bodies.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from typing import TYPE_CHECKING

from service.errors import TooSlow
from service.logs import request_id_var

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Message, Receive, ReceiveMessage, Scope, Send

REQUEST_ID_HEADER = "x-request-id"
_ACCEPTABLE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

access_logger = logging.getLogger("service.access")


def new_request_id() -> str:
    return "req_" + secrets.token_hex(12)


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


def body_pacing_middleware(
    app: ASGIApp,
    *,
    total_seconds: float,
    idle_seconds: float,
    min_bytes_per_second: int,
    grace_seconds: float,
) -> ASGIApp:
    """Bound how long a caller may take to send its body (slowloris and trickling uploads).

    The body must arrive within `total_seconds` of its first read, no gap between
    chunks may exceed `idle_seconds`, and after `grace_seconds` (a slow start:
    TCP ramp-up, a busy client) the average rate must stay above
    `min_bytes_per_second`. Breaking a rule raises TooSlow
    (408) inside the app, where the read happens, so the handler stops, its
    scratch files go and nothing is stored.
    """

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # type: ignore[comparison-overlap]
            await app(scope, receive, send)
            return
        started: float | None = None
        received = 0
        complete = False

        async def paced_receive() -> ReceiveMessage:
            nonlocal started, received, complete
            if complete:
                return await receive()
            now = time.monotonic()
            if started is None:
                started = now
            remaining = started + total_seconds - now
            if remaining <= 0:
                raise TooSlow(f"The request body took longer than {total_seconds:g} s to arrive")
            try:
                async with asyncio.timeout(min(idle_seconds, remaining)):
                    message = await receive()
            except TimeoutError:
                raise TooSlow(
                    f"The request body stalled (nothing for {idle_seconds:g} s)"
                    if idle_seconds <= remaining
                    else f"The request body took longer than {total_seconds:g} s to arrive"
                ) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                elapsed = time.monotonic() - started
                if (
                    not complete
                    and elapsed > grace_seconds
                    and received < min_bytes_per_second * elapsed
                ):
                    raise TooSlow(
                        f"The request body arrives at {received / elapsed:.0f} bytes/s; "
                        f"this service needs at least {min_bytes_per_second} bytes/s"
                    )
            else:
                complete = True  # a disconnect: nothing more will come
            return message

        await app(scope, paced_receive, send)

    return middleware
