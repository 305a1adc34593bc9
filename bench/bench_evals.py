"""Evaluations: examples per second, and what the service adds per example.

    python -m bench.bench_evals [--examples 1000] [--concurrency 16] [--rounds 2]

One simulator, one API, one worker, their own redis-server. A dataset of N
question/answer examples is uploaded once; each round then

- direct: an asyncio client (httpx) asks the simulator's
  `/v1/chat/completions` each example's prompt for both models, with the
  same number of calls in flight as the worker allows
  (EVALUATION_CONCURRENCY_PER_PROVIDER, both models are on one provider);
- service: `POST /evaluations` with the same two models, timed from the
  request to the moment `GET /evaluations/{id}` says succeeded (polled every
  50 ms), every row scored with exact match and chrF.

Examples per second is N over the time; the added wall time per example is
(service time - direct time) / N, so it holds everything the service does
besides the chat calls themselves: queueing, reading the dataset, scoring,
storing rows and summaries. When the simulator is the bottleneck that is
near zero, so the CPU each side spends per example is shown too: the
worker's (from /proc) against the bare client's own. Rounds alternate direct
and service; the best of each is kept.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import httpx

from bench.report import block
from bench.stack import AUTH, Stack, cpu_seconds, section

MODELS = ("gpt-4o-mini", "gpt-4.1-mini")
SYSTEM = "Answer in one short sentence."
UPSTREAM_AUTH = {"Authorization": "Bearer sk-bench-not-a-real-key"}


def examples(count: int) -> bytes:
    lines = [
        json.dumps(
            {
                "messages": [
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": f"What is fact number {i} about the sea?"},
                    {"role": "assistant", "content": f"Fact {i}: the sea holds salt number {i}."},
                ]
            }
        )
        for i in range(count)
    ]
    return ("\n".join(lines) + "\n").encode()


async def _direct(sim_base: str, count: int, concurrency: int) -> tuple[float, float, int]:
    """Every example's prompt to both models; (seconds, this process's CPU seconds,
    failed calls)."""
    bodies = [
        {
            "model": model,
            "messages": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": f"What is fact number {i} about the sea?"},
            ],
            "temperature": 0,
        }
        for i in range(count)
        for model in MODELS
    ]
    pending = iter(bodies)
    failures = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        url = f"{sim_base}/v1/chat/completions"

        async def lane() -> None:
            nonlocal failures
            for body in pending:
                response = await client.post(url, json=body, headers=UPSTREAM_AUTH)
                if response.status_code != 200:
                    failures += 1

        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(lane() for _ in range(concurrency)))
        return time.perf_counter() - started, time.process_time() - cpu, failures


def through_service(base: str, dataset_id: str, count: int, timeout: float) -> tuple[float, dict]:
    with httpx.Client(base_url=base, headers=AUTH, timeout=30) as client:
        started = time.perf_counter()
        created = client.post(
            "/evaluations",
            json={"dataset_id": dataset_id, "models": list(MODELS), "max_examples": count},
        )
        if created.status_code != 202:
            raise RuntimeError(f"POST /evaluations answered {created.status_code}: {created.text}")
        evaluation_id = created.json()["id"]
        deadline = started + timeout
        while True:
            found = client.get(f"/evaluations/{evaluation_id}").json()
            if found["status"] in ("succeeded", "failed", "cancelled"):
                return time.perf_counter() - started, found
            if time.perf_counter() > deadline:
                raise RuntimeError(f"evaluation still {found['status']} after {timeout:g} s")
            time.sleep(0.05)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_evals", description=__doc__)
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args(argv)
    count = args.examples
    errors = 0
    with Stack() as stack:
        with section("starting redis-server, the simulator, the API and a worker"):
            _, sim_base = stack.simulator("--job-seconds", "5")
            env = stack.service_env(
                stack.redis(),
                OPENAI_BASE_URL=f"{sim_base}/v1",
                EVALUATION_CONCURRENCY_PER_PROVIDER=str(args.concurrency),
                EVALUATION_MAX_EXAMPLES=str(max(count, 1)),
            )
            _, base = stack.api(env)
            worker = stack.worker(env, wait_api=base)
        with section(f"uploading {count} examples"):
            uploaded = httpx.post(
                f"{base}/datasets",
                headers=AUTH,
                files={"file": ("sea.jsonl", examples(count), "application/jsonl")},
                timeout=120,
            )
            if uploaded.status_code != 201:
                raise RuntimeError(f"upload answered {uploaded.status_code}: {uploaded.text}")
            dataset_id = uploaded.json()["id"]
        with section("warming up"):
            asyncio.run(_direct(sim_base, min(count, 50), args.concurrency))
            through_service(base, dataset_id, min(count, 50), args.timeout)
        direct_times: list[float] = []
        service_times: list[float] = []
        cpu_per_example: list[float] = []
        client_cpu_per_example: list[float] = []
        last: dict = {}
        for round_no in range(1, args.rounds + 1):
            with section(f"round {round_no}/{args.rounds}: direct"):
                seconds, cpu, failed = asyncio.run(_direct(sim_base, count, args.concurrency))
                direct_times.append(seconds)
                client_cpu_per_example.append(cpu / count)
                errors += failed
            with section(f"round {round_no}/{args.rounds}: through the service"):
                cpu_before = cpu_seconds(worker.pid)
                seconds, last = through_service(base, dataset_id, count, args.timeout)
                cpu_per_example.append((cpu_seconds(worker.pid) - cpu_before) / count)
                service_times.append(seconds)
                scored = last["progress"]["done"]
                if last["status"] != "succeeded" or scored != count:
                    errors += 1
                    print(f"   evaluation ended {last['status']} with {scored}/{count} scored")
    direct, service = min(direct_times), min(service_times)
    added = (service - direct) / count
    rows = [
        (
            "load",
            f"{count} examples x {len(MODELS)} models ({', '.join(MODELS)}), "
            f"{args.concurrency} chat calls in flight, {args.rounds} interleaved rounds, best",
        ),
        ("direct", f"{direct:.2f} s, {count / direct:.1f} examples/s ({2 * count} chat calls)"),
        (
            "service",
            f"{service:.2f} s, {count / service:.1f} examples/s "
            "(POST to succeeded, exact match + chrF, rows stored)",
        ),
        (
            "added per example",
            f"{added * 1000:.2f} ms wall, service at {direct / service:.0%} of direct throughput",
        ),
        (
            "CPU per example",
            f"worker {min(cpu_per_example) * 1000:.2f} ms, a bare asyncio client "
            f"{min(client_cpu_per_example) * 1000:.2f} ms: the service adds "
            f"{(min(cpu_per_example) - min(client_cpu_per_example)) * 1000:.2f} ms",
        ),
        (
            "scores",
            ", ".join(
                f"{m['model']}: chrF {m['scores']['chrf']['mean']:.1f}"
                for m in last.get("summary", {}).get("models", [])
            ),
        ),
    ]
    block("evaluations", rows)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
