"""Chaos: jobs while the provider misbehaves and the worker is SIGKILLed over and over.

    python -m bench.bench_chaos [--jobs 200] [--kill-every 4] [--rate-429 0.1]
        [--rate-5xx 0.1] [--latency-ms 100] [--job-seconds 8]

The simulator answers 429 (with Retry-After) and 5xx on a share of every
`/v1` request and delays every one of them; its own webhooks are forwarded
to the service. `--jobs` jobs are created at once; meanwhile the one worker
is killed with SIGKILL every `--kill-every` seconds and started again at once,
for the first `--chaos-seconds`; then the run waits until every job has had
its final webhook (or `--timeout` passes). A task running when its worker is
killed stays locked by arq's in-progress key, and a job being stepped stays
claimed by the dead follower, for the task timeout plus 10 s (310 s here),
so recovery after the last kill takes minutes.

Counts printed: jobs per final status, jobs not terminal (lost), upstream
jobs per job (duplicates = more than one upstream job tagged with our id),
final webhooks per job counted by distinct `webhook-id` (missing = none,
duplicates = more than one distinct id; repeated deliveries of the same id
are retries, which receivers dedupe, and are shown apart), and kills.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections import Counter, defaultdict

import httpx

from bench.lifecycle import (
    FINAL,
    all_jobs,
    create_dataset,
    create_jobs,
    job_stack,
    upstream_jobs_by_metadata,
    wait_final_webhooks,
)
from bench.report import block
from bench.stack import section


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_chaos", description=__doc__)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--job-seconds", type=float, default=8)
    parser.add_argument("--kill-every", type=float, default=6)
    parser.add_argument(
        "--chaos-seconds", type=float, default=90, help="kill only during this window"
    )
    parser.add_argument("--rate-429", type=float, default=0.1)
    parser.add_argument("--rate-5xx", type=float, default=0.1)
    parser.add_argument("--latency-ms", type=int, default=100)
    parser.add_argument("--reconcile-every", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=540)
    args = parser.parse_args(argv)

    sim_args = (
        "--fault-rate-429",
        str(args.rate_429),
        "--fault-rate-5xx",
        str(args.rate_5xx),
        "--fault-latency-ms",
        str(args.latency_ms),
        "--fault-retry-after",
        "1",
    )
    kills = 0
    with job_stack(
        job_seconds=args.job_seconds,
        forward_webhooks=True,
        poll_min=1,
        poll_max=5,
        sim_args=sim_args,
        env_extra={"RECONCILE_EVERY_SECONDS": str(args.reconcile_every)},
    ) as js:
        dataset_id = create_dataset(js.base)
        stop = threading.Event()

        def killer() -> None:
            nonlocal kills
            while not stop.wait(args.kill_every) and time.monotonic() < chaos_ends:
                js.worker.kill()
                kills += 1
                js.restart_worker()

        thread = threading.Thread(target=killer, name="killer", daemon=True)
        started = time.monotonic()
        chaos_ends = started + args.chaos_seconds
        thread.start()
        try:
            with section(f"creating {args.jobs} jobs while the worker is killed"):
                job_ids = create_jobs(js.base, dataset_id, args.jobs, js.receiver.url)
            with section("waiting for every final webhook"):
                finished = wait_final_webhooks(js.receiver, set(job_ids), started + args.timeout)
        finally:
            stop.set()
            thread.join(timeout=30)
        elapsed = time.monotonic() - started
        # A last look after the killing stopped: late duplicates would show up here.
        time.sleep(3)
        jobs = {job["id"]: job for job in all_jobs(js.base)}
        upstream = upstream_jobs_by_metadata(js.sim_base)
        deliveries = js.receiver.snapshot()
        sim_stats = httpx.get(f"{js.sim_base}/_sim/stats", timeout=30).json()

    statuses = Counter(jobs[i]["status"] if i in jobs else "missing" for i in job_ids)
    lost = [i for i in job_ids if i not in jobs or jobs[i]["status"] not in FINAL]
    duplicated_upstream = [i for i in job_ids if upstream.get(i, 0) > 1]
    no_upstream = [i for i in job_ids if upstream.get(i, 0) == 0]
    final_ids: dict[str, set[str]] = defaultdict(set)
    final_deliveries = 0
    for delivery in deliveries:
        if delivery.status in FINAL:
            final_ids[delivery.job_id].add(delivery.webhook_id)
            final_deliveries += 1
    missing_webhook = [i for i in job_ids if not final_ids.get(i)]
    duplicate_webhook = [i for i in job_ids if len(final_ids.get(i, ())) > 1]
    distinct = sum(len(v) for v in final_ids.values())
    rows = [
        (
            "setup",
            f"{args.jobs} jobs, simulator job_seconds={args.job_seconds:g}, faults "
            f"429 {args.rate_429:.0%} + 5xx {args.rate_5xx:.0%} + {args.latency_ms} ms on every "
            f"/v1 request, worker SIGKILLed every {args.kill_every:g} s, "
            f"for the first {args.chaos_seconds:g} s, "
            f"RECONCILE_EVERY_SECONDS={args.reconcile_every}",
        ),
        (
            "finished",
            f"{'all final' if finished else 'TIMED OUT'} after {elapsed:.1f} s; "
            f"worker killed {kills} times",
        ),
        ("statuses", ", ".join(f"{k} {v}" for k, v in sorted(statuses.items()))),
        ("lost (not terminal)", str(len(lost))),
        (
            "upstream jobs",
            f"{sum(upstream.get(i, 0) for i in job_ids)} for {args.jobs} jobs; "
            f"duplicated {len(duplicated_upstream)}, none {len(no_upstream)}",
        ),
        (
            "final webhooks",
            f"{distinct} distinct webhook-ids for {args.jobs} jobs; missing "
            f"{len(missing_webhook)}, jobs with >1 id {len(duplicate_webhook)}; "
            f"{final_deliveries} deliveries in all "
            f"({final_deliveries - distinct} repeats of an id)",
        ),
        (
            "faults injected",
            ", ".join(f"{k} {v}" for k, v in sorted(sim_stats["requests"]["faults"].items()))
            + f" of {sim_stats['requests']['total']} simulator requests",
        ),
    ]
    if lost or duplicated_upstream or missing_webhook or duplicate_webhook:
        sample = (lost + duplicated_upstream + missing_webhook + duplicate_webhook)[:5]
        rows.append(("examples of problems", ", ".join(sample)))
    block("chaos", rows)
    clean = finished and not (lost or duplicated_upstream or missing_webhook or duplicate_webhook)
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
