"""What happens to a request before any route sees it: the API key check, injected
faults, and the headers OpenAI puts on every response.

This runs outside Litestar's own layers because dropping a connection needs the
server's raw `send`, whose owner holds the socket; Litestar wraps `send` before its
middleware runs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from typing import Any

from litestar.types import HTTPScope, Message, Receive, Scope, Send

from simulator import api_errors, identifiers
from simulator.config import FaultConfig
from simulator.state import SimulatorState

logger = logging.getLogger("simulator.faults")

OPENAI_VERSION = "2020-10-01"
SERVER_ERROR_MESSAGES = {
    500: "The server had an error while processing your request. Sorry about that!",
    502: "Bad gateway.",
    503: "The engine is currently overloaded, please try again later.",
}


class FaultDice:
    """Decides, request by request, which fault (if any) to inject."""

    def __init__(self, faults: FaultConfig) -> None:
        self.faults = faults
        # Not security relevant: reproducible fault patterns are the point.
        self._random = random.Random(faults.seed)  # noqa: S311
        self._injected = 0

    def applies_to(self, path: str) -> bool:
        if not self.faults.active:
            return False
        if self.faults.max_faults is not None and self._injected >= self.faults.max_faults:
            return False
        return any(path.startswith(prefix) for prefix in self.faults.paths)

    def roll(self) -> str | None:
        """`drop`, `429`, `5xx` or None, checked in that order."""
        faults = self.faults
        for kind, rate in (
            ("drop", faults.drop_rate),
            ("429", faults.rate_429),
            ("5xx", faults.rate_5xx),
        ):
            if rate and self._random.random() < rate:
                self._injected += 1
                return kind
        return None

    def server_error_status(self) -> int:
        return self._random.choice(self.faults.status_5xx)


class Edge:
    def __init__(self, state: SimulatorState) -> None:
        self._state = state
        self.dice = FaultDice(state.faults)

    def set_faults(self, faults: FaultConfig) -> None:
        self._state.faults = faults
        self.dice = FaultDice(faults)

    async def handle(self, scope: HTTPScope, receive: Receive, send: Send, app: Any) -> None:
        path: str = scope["path"]
        if not path.startswith("/v1"):
            await app(scope, receive, send)
            return
        self._state.requests_total += 1
        started = time.perf_counter()
        request_id = identifiers.request_id()

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                elapsed_ms = int((time.perf_counter() - started) * 1000)
                headers = list(message.get("headers", []))
                headers += [
                    (b"x-request-id", request_id.encode()),
                    (b"openai-organization", self._state.config.org.encode()),
                    (b"openai-processing-ms", str(elapsed_ms).encode()),
                    (b"openai-version", OPENAI_VERSION.encode()),
                ]
                message = {**message, "headers": headers}
            await send(message)

        if not _has_api_key(scope):
            await _send_error(
                send_with_headers,
                401,
                api_errors.error_body(
                    api_errors.MISSING_API_KEY, "invalid_request_error", None, None
                ),
            )
            return

        dice = self.dice
        if dice.applies_to(path):
            if dice.faults.latency_ms:
                await asyncio.sleep(dice.faults.latency_ms / 1000)
            fault = dice.roll()
            if fault is not None:
                self._state.faults_injected[fault] += 1
                logger.info("injecting %s on %s %s", fault, scope["method"], path)
            if fault == "drop":
                await _drop_connection(send)
                return
            if fault == "429":
                await _send_error(
                    send_with_headers, 429, self._rate_limit_body(), self._retry_headers()
                )
                return
            if fault == "5xx":
                status = dice.server_error_status()
                message = SERVER_ERROR_MESSAGES.get(status, SERVER_ERROR_MESSAGES[500])
                # OpenAI sends no Retry-After on server errors; only a test that set
                # retry_after_ms explicitly gets one, to keep its retries fast.
                retry = self._retry_headers() if dice.faults.retry_after_ms is not None else []
                await _send_error(
                    send_with_headers,
                    status,
                    api_errors.error_body(message, "server_error", None, None),
                    retry,
                )
                return
        await app(scope, receive, send_with_headers)

    def _retry_headers(self) -> list[tuple[bytes, bytes]]:
        faults = self._state.faults
        headers = [(b"retry-after", str(faults.retry_after).encode())]
        if faults.retry_after_ms is not None:
            headers.append((b"retry-after-ms", str(faults.retry_after_ms).encode()))
        return headers

    def _rate_limit_body(self) -> dict[str, Any]:
        wait = self._state.faults.retry_after
        message = (
            f"Rate limit reached for requests in organization {self._state.organization_id} on "
            f"requests per min (RPM): Limit 500, Used 500, Requested 1. Please try again in "
            f"{wait}s. Visit https://platform.openai.com/account/rate-limits to learn more."
        )
        return api_errors.error_body(message, "requests", None, "rate_limit_exceeded")


def _has_api_key(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name.lower() == b"authorization":
            scheme, _, key = value.decode("latin-1").partition(" ")
            return scheme.lower() == "bearer" and bool(key.strip())
    return False


async def _send_error(
    send: Send,
    status: int,
    body: dict[str, Any],
    extra_headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    payload = json.dumps(body).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        *(extra_headers or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload, "more_body": False})


async def _drop_connection(send: Send) -> None:
    """Close the socket without a byte of response, as a failing proxy would.

    uvicorn's `send` is a bound method of the request cycle that owns the transport.
    Once the transport is closed uvicorn marks the cycle disconnected and sends
    nothing more. Under another server, start a response and abandon it, which the
    server answers by closing the connection mid-response.
    """
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if isinstance(transport, asyncio.BaseTransport):
        transport.close()
        # Let the event loop deliver connection_lost before the app returns.
        for _ in range(3):
            await asyncio.sleep(0)
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"4096")],
        }
    )
