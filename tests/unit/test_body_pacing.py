"""The body pacing rules, against a caller whose chunks arrive on a schedule."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from service.api.middleware import BodyPace, body_pacing_middleware
from service.errors import TooSlow

PACE = BodyPace(total_seconds=0.6, idle_seconds=0.25, min_bytes_per_second=0, grace_seconds=0)


def sender(gaps: list[float], chunk: bytes = b"x" * 10):  # type: ignore[no-untyped-def]
    """An ASGI receive whose n-th chunk comes gaps[n] seconds after the app asks for it."""
    remaining = list(gaps)

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(remaining.pop(0))
        return {"type": "http.request", "body": chunk, "more_body": bool(remaining)}

    return receive


async def read_body(receive, think: float = 0.0) -> bytes:  # type: ignore[no-untyped-def]
    """The app: read every chunk, `think` seconds of its own work between reads."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body
        await asyncio.sleep(think)


async def run(gaps: list[float], pace: BodyPace = PACE, think: float = 0.0) -> bytes:
    got: list[bytes] = []

    async def app(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        got.append(await read_body(receive, think))

    await body_pacing_middleware(app, pace)({"type": "http"}, sender(gaps), None)  # type: ignore[arg-type]
    return got[0]


async def test_a_body_that_keeps_coming_is_read_whole() -> None:
    assert await run([0, 0.1, 0.1, 0.1]) == b"x" * 40


async def test_a_gap_longer_than_the_idle_limit_is_refused() -> None:
    with pytest.raises(TooSlow, match=r"stalled \(nothing for 0\.25 s\)"):
        await run([0, 0.1, 0.4, 0])


async def test_short_gaps_that_add_up_past_the_total_limit_are_refused() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TooSlow, match=r"took longer than 0\.6 s"):
        await run([0.2] * 10)
    assert loop.time() - started < 1.0  # refused at the limit, not after the whole body


async def test_time_the_app_spends_between_reads_is_not_a_stall() -> None:
    pace = BodyPace(total_seconds=5, idle_seconds=0.25, min_bytes_per_second=0, grace_seconds=0)
    assert await run([0, 0.05, 0.05], pace, think=0.4) == b"x" * 30


async def test_a_body_read_in_time_leaves_no_timer_behind() -> None:
    loop = asyncio.get_running_loop()
    pace = BodyPace(total_seconds=60, idle_seconds=30, min_bytes_per_second=0, grace_seconds=0)
    await run([0, 0], pace)
    timers = [h for h in loop._scheduled if not h.cancelled()]  # type: ignore[attr-defined]
    assert not [h for h in timers if h.when() > loop.time() + 20]


async def test_a_slow_average_rate_is_refused_after_the_grace() -> None:
    pace = BodyPace(total_seconds=5, idle_seconds=1, min_bytes_per_second=1000, grace_seconds=0.2)
    with pytest.raises(TooSlow, match="bytes/s"):
        await run([0.1] * 10, pace)
