"""The Redis client: client CPU per command, the service's connections against redis-py's.

    python -m bench.bench_redis_client [--commands 20000] [--concurrency 1,16] [--rounds 3]

Starts redis-server and, in this process on uvloop, runs the same commands
through two clients built with the same settings as `service.resources`
(decode_responses, socket timeout, health checks), interleaved by round:

- redis-py: `redis.asyncio` with its own connection class;
- service: `service.resources.redis_client`, what the API and the worker
  use: `GET` and `EVALSHA` go down its one shared, pipelined connection
  (`service.store.shared`), the rest through the pool of
  `service.store.connection`.

Two commands: `GET` of a 1.5 KB JSON record (what `GET /jobs/{id}` reads) and
`EVALSHA` of a script given 400 arguments (the size of a sync step's write
that records 100 provider events). The figure is this process's CPU time
(user + system) per command, the best round per client; Redis' own CPU is not
counted. Each ratio divides the service's figure by redis-py's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable

import uvloop
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.connection import Connection

from bench.report import block
from bench.stack import Stack, section
from service.resources import redis_client
from service.settings import Settings

Command = Callable[[Redis], Awaitable[object]]

RECORD = json.dumps(
    {"id": "job_" + "x" * 24, "status": "running", "events": ["e" * 40] * 30, "n": 1}
)
SCRIPT = "return #ARGV"
ARGUMENTS = [f"ftevent-{i:06d}" if i % 2 else json.dumps({"step": i}) for i in range(400)]


def _plain(ours: Redis) -> Redis:
    """A client with the same pool settings as `ours`, on redis-py's own connections."""
    pool = ours.connection_pool
    plain = ConnectionPool(connection_class=Connection, **pool.connection_kwargs)
    return Redis.from_pool(plain)


async def _per_command(client: Redis, command: Command, count: int, concurrency: int) -> float:
    for _ in range(2 * concurrency):
        await command(client)
    rounds = max(1, count // concurrency)
    started = time.process_time()
    for _ in range(rounds):
        await asyncio.gather(*(command(client) for _ in range(concurrency)))
    return (time.process_time() - started) / (rounds * concurrency)


async def _run(url: str, args: argparse.Namespace) -> list[tuple[str, str]]:
    ours = redis_client(Settings(redis_url=url, auth_disabled=True))
    clients = {"redis-py": _plain(ours), "service": ours}
    seed = clients["redis-py"]
    await seed.set("bench:record", RECORD)
    sha = await seed.script_load(SCRIPT)

    async def get(client: Redis) -> object:
        return await client.get("bench:record")

    async def evalsha(client: Redis) -> object:
        return await client.evalsha(sha, 1, "bench:record", *ARGUMENTS)

    commands: dict[str, tuple[Command, int]] = {
        "GET 1.5 KB": (get, args.commands),
        "EVALSHA, 400 args": (evalsha, max(1, args.commands // 10)),
    }
    best: dict[tuple[str, int, str], float] = {}
    try:
        for round_no in range(1, args.rounds + 1):
            with section(f"round {round_no}/{args.rounds}"):
                for name, (command, count) in commands.items():
                    for concurrency in args.concurrency:
                        for label, client in clients.items():
                            cost = await _per_command(client, command, count, concurrency)
                            key = (name, concurrency, label)
                            best[key] = min(best.get(key, cost), cost)
    finally:
        for client in clients.values():
            await client.aclose()

    rows = []
    for name in commands:
        for concurrency in args.concurrency:
            plain = best[(name, concurrency, "redis-py")]
            ours = best[(name, concurrency, "service")]
            rows.append(
                (
                    f"{name}, c={concurrency}",
                    f"redis-py {plain * 1e6:.1f} us, service {ours * 1e6:.1f} us per command: "
                    f"{ours / plain:.2f}x",
                )
            )
    return rows


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_redis_client", description=__doc__)
    parser.add_argument("--commands", type=int, default=20000)
    parser.add_argument(
        "--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 16]
    )
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    with Stack() as stack:
        with section("starting redis-server"):
            url = stack.redis()
        rows = uvloop.run(_run(url, args))
    rows.append(("method", "client CPU per command, best of the rounds; lower is better"))
    block("redis client", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
