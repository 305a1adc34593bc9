"""The providers' HTTP client: client CPU per request, ours against httpx2's.

    python -m bench.bench_http_client [--requests 3000] [--concurrency 1,16] [--rounds 3]

Starts `bench/hello_app.py` (uvicorn, uvloop, one constant route) and, in this
process on uvloop, sends the same GET from three clients, interleaved by round:

- httpx2: an `httpx2.AsyncClient` set up as the provider's client was before
  it moved (64 connections, 8 kept alive);
- SDK aiohttp: the openai SDK's own aiohttp transport under httpx2
  (`openai.DefaultAioHttpClient`);
- wire: `service.providers.wire.Wire`, what the providers use now.

The figure is this process's CPU time (user + system) per request, the best
round per client; the server's CPU is not counted. Each ratio divides a figure
of this run by httpx2's.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable

import httpx2
import uvloop
from openai import DefaultAioHttpClient

from bench.report import block
from bench.stack import Stack, section
from service.providers.wire import Wire

Send = Callable[[], Awaitable[bytes]]


async def _per_request(send: Send, requests: int, concurrency: int) -> float:
    """Client CPU seconds per request, after a warm-up that fills the pool."""
    for _ in range(2 * concurrency):
        await send()
    started = time.process_time()
    for _ in range(requests // concurrency):
        await asyncio.gather(*(send() for _ in range(concurrency)))
    return (time.process_time() - started) / (requests // concurrency * concurrency)


async def _httpx2(url: str, requests: int, concurrency: int, *, aiohttp: bool) -> float:
    kind = DefaultAioHttpClient if aiohttp else httpx2.AsyncClient
    client = kind(limits=httpx2.Limits(max_connections=64, max_keepalive_connections=8))
    try:

        async def send() -> bytes:
            response = await client.get(url)
            return response.content

        return await _per_request(send, requests, concurrency)
    finally:
        await client.aclose()


async def _wire(base: str, requests: int, concurrency: int) -> float:
    wire = Wire(base, timeout=30)
    try:

        async def send() -> bytes:
            return (await wire.send("GET", "/hello", headers={})).body

        return await _per_request(send, requests, concurrency)
    finally:
        await wire.aclose()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_http_client", description=__doc__)
    parser.add_argument("--requests", type=int, default=3000, help="per client, level and round")
    parser.add_argument("--concurrency", default="1,16", help="requests in flight, comma-separated")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    levels = [int(part) for part in args.concurrency.split(",") if part.strip()]

    best: dict[tuple[str, int], float] = {}
    with Stack() as stack:
        with section("starting the hello-world app"):
            base = stack.hello()
        clients: dict[str, Callable[[int], Awaitable[float]]] = {
            "httpx2": lambda c: _httpx2(f"{base}/hello", args.requests, c, aiohttp=False),
            "SDK aiohttp": lambda c: _httpx2(f"{base}/hello", args.requests, c, aiohttp=True),
            "wire": lambda c: _wire(base, args.requests, c),
        }
        for round_no in range(1, args.rounds + 1):
            for level in levels:
                for name, run in clients.items():
                    with section(f"round {round_no}/{args.rounds}: {name}, {level} in flight"):
                        seconds = uvloop.run(run(level))
                    key = (name, level)
                    best[key] = min(best.get(key, seconds), seconds)

    rows = [("load", f"{args.requests} GETs per client and level, best of {args.rounds} rounds")]
    for level in levels:
        baseline = best[("httpx2", level)]
        for name in clients:
            seconds = best[(name, level)]
            rows.append(
                (
                    f"{level} in flight, {name}",
                    f"{seconds * 1e6:,.0f} us client CPU per request "
                    f"({seconds / baseline:.2f}x httpx2)",
                )
            )
    block("http client", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
