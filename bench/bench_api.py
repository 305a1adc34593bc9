"""API: `GET /jobs/{id}` and `GET /jobs` against a hello-world route, with wrk.

    python -m bench.bench_api [--connections 32] [--seconds 10] [--rounds 3] [--jobs 200]

Starts redis-server, `python -m service` and `bench/hello_app.py` (the same
framework and uvicorn settings, one route returning a constant), creates a
dataset and `--jobs` jobs through the API (no worker runs, so they stay
`pending` and the reads are stable), then runs wrk at fixed concurrency
against the three URLs in interleaved rounds. Each figure is the round with
the highest throughput for that URL; the ratios divide figures of this run.
"""

from __future__ import annotations

import argparse
import sys
import time

import httpx

from bench import wrk
from bench.report import block, fmt_ms, record_goal, verdict
from bench.stack import AUTH, Stack, section

EXAMPLES = [
    {
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": f"Question number {i}?"},
            {"role": "assistant", "content": f"Answer number {i}."},
        ]
    }
    for i in range(12)
]


def seed_jobs(base: str, count: int) -> list[str]:
    with httpx.Client(base_url=base, headers=AUTH, timeout=30) as client:
        dataset = client.post("/datasets", json={"name": "bench", "examples": EXAMPLES})
        dataset.raise_for_status()
        ids = []
        for index in range(count):
            job = client.post(
                "/jobs",
                json={
                    "dataset_id": dataset.json()["id"],
                    "model": "gpt-4o-mini-2024-07-18",
                    "suffix": f"bench{index}",
                },
            )
            job.raise_for_status()
            ids.append(job.json()["id"])
        listed = client.get("/jobs").json()
        if len(listed["data"]) != min(count, 20):
            raise RuntimeError(f"GET /jobs returned {len(listed['data'])} jobs")
        return ids


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_api", description=__doc__)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=200, help="jobs stored for the tenant")
    args = parser.parse_args(argv)
    wrk.require_wrk()

    with Stack() as stack:
        with section("starting redis-server, the API and the hello-world app"):
            env = stack.service_env(stack.redis())
            _, base = stack.api(env)
            hello_url = f"{stack.hello()}/hello"
        with section(f"creating a dataset and {args.jobs} jobs"):
            job_ids = seed_jobs(base, args.jobs)

        targets = {
            "hello world": (hello_url, {}),
            "GET /jobs/{id}": (f"{base}/jobs/{job_ids[len(job_ids) // 2]}", AUTH),
            "GET /jobs": (f"{base}/jobs", AUTH),
        }
        with section("warming up (2 s per URL)"):
            for url, headers in targets.values():
                wrk.run(url, connections=args.connections, seconds=2, headers=headers)
        results: dict[str, list[wrk.WrkResult]] = {name: [] for name in targets}
        for round_no in range(1, args.rounds + 1):
            for name, (url, headers) in targets.items():
                with section(f"round {round_no}/{args.rounds}: {name}"):
                    results[name].append(
                        wrk.run(
                            url, connections=args.connections, seconds=args.seconds, headers=headers
                        )
                    )
                time.sleep(0.5)

    best = {name: max(runs, key=lambda r: r.requests_per_second) for name, runs in results.items()}
    hello = best["hello world"]
    rows = [
        (
            "load",
            f"wrk -t1 -c{args.connections} -d{args.seconds:g}s, {args.rounds} interleaved rounds, "
            f"best round per URL; {args.jobs} jobs stored",
        )
    ]
    for name, result in best.items():
        rows.append((name, result.line()))
    for name in ("GET /jobs/{id}", "GET /jobs"):
        ratio = best[name].requests_per_second / hello.requests_per_second
        goal = verdict(ratio, 0.4, at_least=True) if name == "GET /jobs/{id}" else "(no goal)"
        rows.append(
            (
                f"{name} / hello",
                f"throughput {ratio:.0%}  {goal}; p50 +{fmt_ms(best[name].p50 - hello.p50)}, "
                f"p99 +{fmt_ms(best[name].p99 - hello.p99)}",
            )
        )
    rows.append(
        (
            "all rounds (req/s)",
            "; ".join(
                f"{name}: " + ", ".join(f"{r.requests_per_second:,.0f}" for r in runs)
                for name, runs in results.items()
            ),
        )
    )
    ratio = best["GET /jobs/{id}"].requests_per_second / hello.requests_per_second
    record_goal(
        "GET /jobs/{id} vs hello world",
        f"{ratio:.0%} of its throughput (same server, c={args.connections})",
        ">= 40 %",
        ratio >= 0.4,
    )
    block("api", rows)
    errors = sum(r.errors for runs in results.values() for r in runs)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
