"""Lifecycle at scale: many jobs at once against the simulator, one worker.

    python -m bench.bench_lifecycle [--jobs 1000] [--job-seconds 10]
        [--poll-min 1] [--poll-max 5] [--modes polling,webhooks]
        [--worker-processes 1[,2,4]]

For each mode a fresh stack (redis-server, API, simulator, one worker) runs
`--jobs` jobs created together (32 POSTs in flight), each with a webhook_url
pointing at a local receiver. The simulator sends its own
`fine_tuning.job.succeeded` webhooks to a tap that notes the arrival time
(the provider-side "model ready" moment); in `webhooks` mode the tap also
forwards them to the service's `POST /webhooks/openai`, in `polling` mode the
worker only learns by polling (POLL_MIN/MAX_SECONDS).

Reports, per mode: time from the first POST until every job's final webhook
arrived; model-ready delay (tap arrival -> our `job.succeeded` webhook at the
receiver) p50/p99/max, and its two parts split at the moment the service
recorded success (the payload's `updated_at`): noticing the finish, and
delivering the webhook; worker CPU seconds per job (/proc, whole run); Redis
`used_memory` growth per job (everything the run left: records, events,
deliveries, queue leftovers); Redis round trips per job (requests Redis read
from all clients during the run: the API's job creation, the worker, arq's
queue polling).

`--worker-processes 1,2,4` repeats each mode with `WORKER_PROCESSES` set to
each count (one `python -m worker` command, that many worker processes): the
scale-out curve. CPU is then the whole process tree's.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter

from bench.hooks import Delivery
from bench.lifecycle import (
    all_jobs,
    create_dataset,
    create_jobs,
    job_stack,
    upstream_jobs_by_metadata,
    wait_final_webhooks,
)
from bench.report import block, fmt_ms, percentile, record_goal, verdict
from bench.stack import redis_round_trips, section, tree_cpu_seconds


def run_mode(
    args: argparse.Namespace, mode: str, processes: int = 1
) -> tuple[list[tuple[str, str]], bool]:
    forward = mode == "webhooks"
    mode = mode if processes == 1 else f"{mode} x{processes}"
    with job_stack(
        job_seconds=args.job_seconds,
        forward_webhooks=forward,
        poll_min=args.poll_min,
        poll_max=args.poll_max,
        env_extra={"WORKER_PROCESSES": str(processes)},
    ) as js:
        dataset_id = create_dataset(js.base)
        redis = js.stack.redis_client()
        memory_before = int(redis.info("memory")["used_memory"])
        trips_before = redis_round_trips(redis)
        cpu_before = tree_cpu_seconds(js.worker.pid)
        started = time.monotonic()
        with section(f"[{mode}] creating {args.jobs} jobs"):
            job_ids = create_jobs(js.base, dataset_id, args.jobs, js.receiver.url)
        created = time.monotonic() - started
        with section(f"[{mode}] waiting for every final webhook"):
            finished = wait_final_webhooks(
                js.receiver, set(job_ids), time.monotonic() + args.timeout
            )
        elapsed = time.monotonic() - started
        worker_cpu = tree_cpu_seconds(js.worker.pid) - cpu_before
        trips = redis_round_trips(redis) - trips_before
        time.sleep(1)  # let the last acknowledgements land before reading Redis
        memory_after = int(redis.info("memory")["used_memory"])
        jobs = all_jobs(js.base)
        upstream = upstream_jobs_by_metadata(js.sim_base)
        deliveries = js.receiver.snapshot()

    statuses = Counter(job["status"] for job in jobs)
    succeeded = [d for d in deliveries if d.type == "job.succeeded"]
    unique_ids = {d.webhook_id for d in succeeded}
    first_delivery: dict[str, Delivery] = {}
    for delivery in succeeded:
        if delivery.upstream_job_id:
            first_delivery.setdefault(delivery.upstream_job_id, delivery)
    delays, noticing, sending = [], [], []
    for upstream_id, delivery in first_delivery.items():
        if upstream_id not in js.tap.finished_at:
            continue
        delay = delivery.at - js.tap.finished_at[upstream_id]
        delays.append(delay)
        if delivery.since_announced is not None:
            # Split at the moment we recorded success (the payload's updated_at).
            sending.append(delivery.since_announced)
            noticing.append(delay - delivery.since_announced)
    goal = args.poll_max + 1 if not forward else 1.0
    p99 = percentile(delays, 99)
    duplicates = sum(1 for n in upstream.values() if n > 1)
    rows = [
        (
            f"[{mode}] all final",
            f"{elapsed:.1f} s for {len(job_ids)} jobs ({len(job_ids) / elapsed:.1f} jobs/s; "
            f"creating took {created:.1f} s){'' if finished else '  TIMED OUT'}",
        ),
        (f"[{mode}] statuses", ", ".join(f"{k} {v}" for k, v in sorted(statuses.items()))),
        (
            f"[{mode}] ready delay",
            f"p50 {fmt_ms(percentile(delays, 50))}, p99 {fmt_ms(p99)}, "
            f"max {fmt_ms(max(delays, default=float('nan')))} over {len(delays)} jobs  "
            f"{verdict(p99, goal, at_least=False)} s",
        ),
        (
            f"[{mode}] delay split",
            f"provider finish -> our succeeded p50 {fmt_ms(percentile(noticing, 50))}, "
            f"p99 {fmt_ms(percentile(noticing, 99))}; our succeeded -> receiver p50 "
            f"{fmt_ms(percentile(sending, 50))}, p99 {fmt_ms(percentile(sending, 99))}",
        ),
        (
            f"[{mode}] webhooks",
            f"{len(succeeded)} job.succeeded deliveries, {len(unique_ids)} distinct webhook-ids; "
            f"provider webhooks seen by the tap {js.tap.seen}, forward failures "
            f"{js.tap.forward_failures}",
        ),
        (
            f"[{mode}] upstream jobs",
            f"{sum(upstream.values())} for {len(upstream)} of our jobs, {duplicates} duplicated",
        ),
        (
            f"[{mode}] worker CPU",
            f"{worker_cpu:.1f} s = {worker_cpu / len(job_ids) * 1000:.1f} ms per job  "
            f"{verdict(worker_cpu / len(job_ids) * 1000, 15, at_least=False)}",
        ),
        (
            f"[{mode}] Redis trips",
            f"{trips} requests read = {trips / len(job_ids):.1f} per job (all clients)  "
            f"{verdict(trips / len(job_ids), 20, at_least=False)}",
        ),
        (
            f"[{mode}] Redis memory",
            f"+{(memory_after - memory_before) / 1024 / 1024:.1f} MiB = "
            f"{(memory_after - memory_before) / len(job_ids) / 1024:.1f} KiB per job",
        ),
    ]
    cpu_ms = worker_cpu / len(job_ids) * 1000
    trips_per_job = trips / len(job_ids)
    record_goal(
        f"{len(job_ids)} jobs [{mode}]",
        f"ready delay p50 {percentile(delays, 50):.1f} s, p99 {p99:.1f} s; "
        f"{cpu_ms:.1f} ms worker CPU and {trips_per_job:.1f} Redis round trips per job",
        f"p99 <= {goal:g} s, <= 15 ms, <= 20 trips",
        p99 <= goal and cpu_ms <= 15 and trips_per_job <= 20,
    )
    ok = finished and statuses.get("succeeded", 0) == len(job_ids) and duplicates == 0
    return rows, ok


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_lifecycle", description=__doc__)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--job-seconds", type=float, default=10)
    parser.add_argument("--poll-min", type=float, default=1)
    parser.add_argument("--poll-max", type=float, default=5)
    parser.add_argument("--modes", default="polling,webhooks")
    parser.add_argument("--timeout", type=float, default=240, help="per mode, seconds")
    parser.add_argument(
        "--worker-processes", default="1", help="WORKER_PROCESSES values to run, e.g. 1,2,4"
    )
    args = parser.parse_args(argv)
    rows = [
        (
            "setup",
            f"{args.jobs} jobs, simulator job_seconds={args.job_seconds:g}, "
            f"POLL_MIN/MAX_SECONDS={args.poll_min:g}/{args.poll_max:g}, "
            f"WORKER_PROCESSES={args.worker_processes}",
        )
    ]
    ok = True
    counts = [int(n) for n in args.worker_processes.split(",") if n.strip()]
    for processes in counts:
        for mode in (m.strip() for m in args.modes.split(",") if m.strip()):
            mode_rows, mode_ok = run_mode(args, mode, processes)
            rows += mode_rows
            ok = ok and mode_ok
    block("lifecycle", rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
