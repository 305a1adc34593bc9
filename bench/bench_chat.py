"""Chat overhead: `POST /chat` against the simulator's `/v1/chat/completions` called directly.

    python -m bench.bench_chat [--connections 1,16] [--seconds 8] [--rounds 2]

One simulator process, one `python -m service` pointed at it (and its own
redis-server). At each concurrency, in interleaved rounds:

- plain JSON: wrk POSTs the same conversation to the simulator directly and
  through the service; the added latency is service minus direct, p50 and p99.
- streaming (SSE): an asyncio client (httpx) keeps N requests in flight and
  records the time to the first body chunk and to the end of the stream, for
  both targets. wrk cannot see the first chunk, hence a client of our own;
  it is the same client for both sides, so its own cost cancels in the
  difference.

The direct request carries the same body the service sends upstream
(including `stream_options.include_usage`), so the simulator does the same
work both ways. Each figure is the best round (lowest p50) per target.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass

import httpx

from bench import wrk
from bench.report import block, fmt_ms, percentile, record_goal, verdict
from bench.stack import AUTH, Stack, section

MESSAGES = [
    {"role": "system", "content": "西村ひろゆきBot"},
    {"role": "user", "content": "Is it worth learning to cook at home? Answer in two sentences."},
]
MODEL = "gpt-4o-mini"
UPSTREAM_AUTH = {"Authorization": "Bearer sk-bench-not-a-real-key"}


@dataclass(frozen=True)
class StreamStats:
    requests: int
    errors: int
    first_p50: float
    first_p99: float
    total_p50: float
    total_p99: float

    def line(self) -> str:
        return (
            f"first chunk p50 {fmt_ms(self.first_p50)}, p99 {fmt_ms(self.first_p99)}; "
            f"whole stream p50 {fmt_ms(self.total_p50)}, p99 {fmt_ms(self.total_p99)} "
            f"({self.requests} requests, {self.errors} errors)"
        )


async def _stream_load(
    url: str, body: dict, headers: dict[str, str], connections: int, seconds: float
) -> StreamStats:
    firsts: list[float] = []
    totals: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        deadline = time.perf_counter() + seconds

        async def loop() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                first = None
                async with client.stream("POST", url, json=body, headers=headers) as response:
                    async for chunk in response.aiter_raw():
                        if first is None and chunk:
                            first = time.perf_counter() - started
                    if response.status_code != 200 or first is None:
                        errors += 1
                        continue
                firsts.append(first)
                totals.append(time.perf_counter() - started)

        await asyncio.gather(*(loop() for _ in range(connections)))
    return StreamStats(
        requests=len(firsts),
        errors=errors,
        first_p50=percentile(firsts, 50),
        first_p99=percentile(firsts, 99),
        total_p50=percentile(totals, 50),
        total_p99=percentile(totals, 99),
    )


def stream_load(
    url: str, body: dict, headers: dict[str, str], connections: int, seconds: float
) -> StreamStats:
    return asyncio.run(_stream_load(url, body, headers, connections, seconds))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_chat", description=__doc__)
    parser.add_argument("--connections", default="1,16", help="comma-separated concurrencies")
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    levels = [int(part) for part in args.connections.split(",") if part.strip()]
    wrk.require_wrk()

    plain = {"model": MODEL, "messages": MESSAGES}
    streamed = {**plain, "stream": True}
    upstream_streamed = {**streamed, "stream_options": {"include_usage": True}}
    rows: list[tuple[str, str]] = []
    errors = 0
    with Stack() as stack:
        with section("starting redis-server, the simulator and the API"):
            _, sim_base = stack.simulator("--job-seconds", "5")
            env = stack.service_env(stack.redis(), OPENAI_BASE_URL=f"{sim_base}/v1")
            _, base = stack.api(env)
            check = httpx.post(f"{base}/chat", json=plain, headers=AUTH, timeout=30)
            if check.status_code != 200:
                raise RuntimeError(f"POST /chat answered {check.status_code}: {check.text[:300]}")
        direct_url = f"{sim_base}/v1/chat/completions"
        service_url = f"{base}/chat"
        direct_script = wrk.post_script(
            json.dumps(plain), {"Content-Type": "application/json", **UPSTREAM_AUTH}
        )
        service_script = wrk.post_script(
            json.dumps(plain), {"Content-Type": "application/json", **AUTH}
        )
        try:
            with section("warming up"):
                wrk.run(direct_url, connections=4, seconds=2, script=direct_script)
                wrk.run(service_url, connections=4, seconds=2, script=service_script)
                stream_load(direct_url, upstream_streamed, UPSTREAM_AUTH, 4, 1)
                stream_load(service_url, streamed, AUTH, 4, 1)
            for connections in levels:
                plain_runs: dict[str, list[wrk.WrkResult]] = {"direct": [], "service": []}
                stream_runs: dict[str, list[StreamStats]] = {"direct": [], "service": []}
                for round_no in range(1, args.rounds + 1):
                    label = f"c={connections}, round {round_no}/{args.rounds}"
                    with section(f"{label}: plain JSON, direct then through the service"):
                        plain_runs["direct"].append(
                            wrk.run(
                                direct_url,
                                connections=connections,
                                seconds=args.seconds,
                                script=direct_script,
                            )
                        )
                        plain_runs["service"].append(
                            wrk.run(
                                service_url,
                                connections=connections,
                                seconds=args.seconds,
                                script=service_script,
                            )
                        )
                    with section(f"{label}: streaming, direct then through the service"):
                        stream_runs["direct"].append(
                            stream_load(
                                direct_url,
                                upstream_streamed,
                                UPSTREAM_AUTH,
                                connections,
                                args.seconds,
                            )
                        )
                        stream_runs["service"].append(
                            stream_load(service_url, streamed, AUTH, connections, args.seconds)
                        )
                direct = min(plain_runs["direct"], key=lambda r: r.p50)
                service = min(plain_runs["service"], key=lambda r: r.p50)
                s_direct = min(stream_runs["direct"], key=lambda r: r.first_p50)
                s_service = min(stream_runs["service"], key=lambda r: r.first_p50)
                errors += sum(r.errors for runs in plain_runs.values() for r in runs)
                errors += sum(r.errors for runs in stream_runs.values() for r in runs)
                added_p50 = service.p50 - direct.p50
                added_p99 = service.p99 - direct.p99
                first_p50 = s_service.first_p50 - s_direct.first_p50
                first_p99 = s_service.first_p99 - s_direct.first_p99
                share = service.requests_per_second / direct.requests_per_second
                if connections == 1:
                    record_goal(
                        "/chat added latency, c=1",
                        f"p50 +{added_p50 * 1000:.2f} ms, p99 +{added_p99 * 1000:.2f} ms "
                        "over calling the simulator directly",
                        "p50 <= 2 ms, p99 <= 10 ms",
                        added_p50 <= 0.002 and added_p99 <= 0.010,
                    )
                else:
                    record_goal(
                        f"/chat at {connections} connections",
                        f"{share:.0%} of calling the simulator directly",
                        ">= 60 %",
                        share >= 0.6,
                    )
                rows += [
                    (f"c={connections} JSON direct", direct.line()),
                    (f"c={connections} JSON /chat", service.line()),
                    (
                        f"c={connections} JSON added",
                        f"p50 +{fmt_ms(added_p50)} "
                        f"{verdict(added_p50 * 1000, 2, at_least=False)}; "
                        f"p99 +{fmt_ms(added_p99)} "
                        f"{verdict(added_p99 * 1000, 10, at_least=False)}; "
                        f"throughput {service.requests_per_second / direct.requests_per_second:.0%}"
                        " of direct",
                    ),
                    (f"c={connections} SSE direct", s_direct.line()),
                    (f"c={connections} SSE /chat", s_service.line()),
                    (
                        f"c={connections} SSE added",
                        f"first chunk p50 +{fmt_ms(first_p50)}, p99 +{fmt_ms(first_p99)}; "
                        f"whole stream p50 +{fmt_ms(s_service.total_p50 - s_direct.total_p50)}",
                    ),
                ]
        finally:
            direct_script.unlink(missing_ok=True)
            service_script.unlink(missing_ok=True)

    rows.insert(
        0,
        (
            "load",
            f"JSON: wrk -t1 -c<N> -d{args.seconds:g}s POST; SSE: asyncio+httpx client, "
            f"N in flight for {args.seconds:g}s; {args.rounds} interleaved rounds, best p50",
        ),
    )
    block("chat", rows)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
