"""Ingest: a generated chat JSONL through `POST /datasets`, against two baselines.

    python -m bench.bench_ingest [--mb 100] [--seed N] [--path inline|worker|both]

The same file goes through:

- the service, end to end: multipart upload to a real `python -m service`
  (with its own redis-server), until the dataset is `ready`. Two paths:
  `inline` raises SYNC_VALIDATION_MAX_BYTES above the file size so the API
  validates in the request on its process pool (201); `worker` keeps the
  default (32 MB), so a larger upload is answered 202 and `python -m worker`
  validates it in the background; the clock stops when GET shows `ready`.
- the cookbook notebook's procedure (bench/cookbook.py), one thread;
- the floor: the same message texts through encode_ordinary_batch on every core.

Prints MiB/s for each, the ratios, the service's token count checked against
the cookbook's, and the peak memory growth of the API process (VmHWM after
minus VmRSS before; its pool workers and the worker process listed apart).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.cookbook import CookbookResult, cookbook, message_texts, tokenize_floor
from bench.datagen import chat_jsonl
from bench.report import block, record_goal, verdict
from bench.stack import AUTH, Stack, children, proc_status_kb, reset_peak, section

ENCODING = "o200k_base"  # the service's default model, gpt-4o-mini, counts in o200k_base
MODEL = "gpt-4o-mini-2024-07-18"
MIB = 1024 * 1024


@dataclass
class ServiceRun:
    path: str
    seconds: float
    status: int
    token_count: int | None
    example_count: int | None
    api_rss_before_kb: int
    api_peak_kb: int
    pool_peaks_kb: list[int] = field(default_factory=list)
    worker_rss_before_kb: int = 0
    worker_peak_kb: int = 0

    @property
    def api_growth_mib(self) -> float:
        return (self.api_peak_kb - self.api_rss_before_kb) / 1024


def _upload(client: httpx.Client, base: str, path: Path) -> httpx.Response:
    with path.open("rb") as handle:
        return client.post(
            f"{base}/datasets",
            headers=AUTH,
            files={"file": (path.name, handle, "application/jsonl")},
            data={"model": MODEL, "name": path.stem},
        )


def _wait_ready(client: httpx.Client, base: str, dataset_id: str, deadline: float) -> dict:
    while True:
        body = client.get(f"{base}/datasets/{dataset_id}", headers=AUTH).json()
        if body["status"] != "validating":
            return body
        if time.monotonic() > deadline:
            raise TimeoutError(f"dataset {dataset_id} still validating")
        time.sleep(0.05)


class ServiceUnderTest:
    """One service stack for one path, started once and uploaded to once per round."""

    def __init__(self, stack: Stack, mode: str, size: int, warmup: Path, timeout: float) -> None:
        self.mode = mode
        self.timeout = timeout
        # inline: everything validated in the request. worker: everything above 1 MiB
        # (the warm-up file too, so the worker has its encodings loaded) goes to the worker.
        limit = size + MIB if mode == "inline" else MIB
        env = stack.service_env(stack.redis(), SYNC_VALIDATION_MAX_BYTES=str(limit))
        self.api, self.base = stack.api(env)
        self.worker = stack.worker(env, wait_api=self.base) if mode == "worker" else None
        self.client = httpx.Client(timeout=timeout)
        # A running service has its pool spawned and encodings loaded; so does this one.
        warm = _upload(self.client, self.base, warmup)
        if warm.status_code == 202:
            _wait_ready(self.client, self.base, warm.json()["id"], time.monotonic() + timeout)
        elif warm.status_code != 201:
            raise RuntimeError(f"warm-up upload failed: {warm.status_code} {warm.text[:300]}")

    def close(self) -> None:
        self.client.close()

    def measure(self, path: Path) -> ServiceRun:
        api, worker = self.api, self.worker
        for pid in [api.pid, *children(api.pid)] + ([worker.pid] if worker else []):
            reset_peak(pid)
        api_before = proc_status_kb(api.pid, "VmRSS")
        worker_before = proc_status_kb(worker.pid, "VmRSS") if worker else 0
        started = time.monotonic()
        response = _upload(self.client, self.base, path)
        body = response.json()
        if response.status_code == 202:
            body = _wait_ready(self.client, self.base, body["id"], started + self.timeout)
        seconds = time.monotonic() - started
        if body.get("status") != "ready":
            raise RuntimeError(f"upload not accepted: {response.status_code} {str(body)[:500]}")
        # Free the disk (and the page cache it holds) for the next round.
        self.client.delete(f"{self.base}/datasets/{body['id']}", headers=AUTH)
        return ServiceRun(
            path=self.mode,
            seconds=seconds,
            status=response.status_code,
            token_count=body.get("token_count"),
            example_count=body.get("example_count"),
            api_rss_before_kb=api_before,
            api_peak_kb=proc_status_kb(api.pid, "VmHWM"),
            pool_peaks_kb=[proc_status_kb(pid, "VmHWM") for pid in children(api.pid)],
            worker_rss_before_kb=worker_before,
            worker_peak_kb=proc_status_kb(worker.pid, "VmHWM") if worker else 0,
        )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_ingest", description=__doc__)
    parser.add_argument("--mb", type=float, default=100, help="file size in MiB (default 100)")
    parser.add_argument("--seed", type=int, default=20261101)
    parser.add_argument("--path", choices=("inline", "worker", "both"), default="both")
    parser.add_argument("--rounds", type=int, default=2, help="best of N interleaved rounds")
    parser.add_argument("--timeout", type=float, default=400, help="per upload, seconds")
    args = parser.parse_args(argv)

    with section(f"generating {args.mb:g} MiB chat JSONL (seed {args.seed})"):
        path = chat_jsonl(args.mb, args.seed)
        warmup = chat_jsonl(2, args.seed + 1)
    size_mib = path.stat().st_size / MIB

    modes = ("inline", "worker") if args.path == "both" else (args.path,)
    books: list[CookbookResult] = []
    floor_rounds: list[dict[str, tuple[float, int]]] = []
    service_runs: dict[str, list[ServiceRun]] = {mode: [] for mode in modes}
    with contextlib.ExitStack() as scope:
        services = []
        for mode in modes:
            with section(f"starting the service stack for the {mode} path"):
                stack = scope.enter_context(Stack())
                service = ServiceUnderTest(stack, mode, path.stat().st_size, warmup, args.timeout)
                scope.callback(service.close)
                services.append(service)
        with section("extracting message texts for the floor"):
            texts = message_texts(path)
        # Rounds interleave the contestants, so a noisy minute hurts all of them alike;
        # each figure below is the best of its rounds.
        for round_no in range(1, args.rounds + 1):
            with section(f"round {round_no}/{args.rounds}: cookbook procedure (one thread)"):
                books.append(cookbook(path, ENCODING))
            with section(f"round {round_no}/{args.rounds}: tokenize-only floor (all cores)"):
                floor_rounds.append(tokenize_floor(texts, ENCODING, with_batch=round_no == 1))
            for service in services:
                with section(f"round {round_no}/{args.rounds}: service, {service.mode} path"):
                    service_runs[service.mode].append(service.measure(path))
        del texts

    book = min(books, key=lambda b: b.total_seconds)
    floors = {
        name: min((r[name] for r in floor_rounds if name in r), key=lambda pair: pair[0])
        for name in floor_rounds[0]
    }
    floor_name, (floor_seconds, floor_tokens) = min(floors.items(), key=lambda item: item[1][0])
    runs = []
    for measured in service_runs.values():
        best = min(measured, key=lambda r: r.seconds)
        best.api_peak_kb = max(r.api_peak_kb - r.api_rss_before_kb for r in measured)
        best.api_peak_kb += best.api_rss_before_kb
        best.worker_peak_kb = best.worker_rss_before_kb + max(
            r.worker_peak_kb - r.worker_rss_before_kb for r in measured
        )
        best.pool_peaks_kb = [
            max(kbs) for kbs in zip(*(r.pool_peaks_kb for r in measured), strict=False)
        ]
        runs.append(best)

    rows = [
        ("file", f"{path} ({size_mib:.1f} MiB, {book.examples} examples)"),
        ("rounds", f"{args.rounds} interleaved; every figure is the best of its rounds"),
        ("cookbook", f"{book.total_seconds:.2f} s = {size_mib / book.total_seconds:.2f} MiB/s"),
        (
            "  phases",
            ", ".join(f"{name} {secs:.2f} s" for name, secs in book.seconds.items()),
        ),
        (
            "cookbook load+count",
            f"{book.load_and_count_seconds:.2f} s = "
            f"{size_mib / book.load_and_count_seconds:.2f} MiB/s (no checks, no assistant pass)",
        ),
        (
            "floor",
            f"{floor_seconds:.2f} s = {size_mib / floor_seconds:.2f} MiB/s (fastest: {floor_name})",
        ),
        (
            "  ways",
            ", ".join(f"{name} {secs:.2f} s" for name, (secs, _) in floors.items()),
        ),
    ]
    for run in runs:
        speedup = book.total_seconds / run.seconds
        over_floor = run.seconds / floor_seconds
        counts_match = run.token_count == book.token_count and run.example_count == book.examples
        rows += [
            (
                f"service [{run.path}]",
                f"{run.seconds:.2f} s = {size_mib / run.seconds:.2f} MiB/s (HTTP {run.status})",
            ),
            (
                "  vs cookbook",
                f"{speedup:.2f}x faster  {verdict(speedup, 5, at_least=True)}; "
                f"vs load+count only {book.load_and_count_seconds / run.seconds:.2f}x",
            ),
            (
                "  vs floor",
                f"{over_floor:.2f}x the floor's time  {verdict(over_floor, 1.3, at_least=False)}; "
                f"vs encode_ordinary_batch {run.seconds / floors['batch'][0]:.2f}x",
            ),
            (
                "  token_count",
                f"{run.token_count} (cookbook {book.token_count}, floor texts {floor_tokens}"
                f" + overhead) {'match' if counts_match else 'MISMATCH'}",
            ),
            (
                "  API peak growth",
                f"{run.api_growth_mib:.1f} MiB (RSS {run.api_rss_before_kb / 1024:.0f} -> "
                f"peak {run.api_peak_kb / 1024:.0f} MiB)  "
                f"{verdict(run.api_growth_mib, 100, at_least=False)}",
            ),
            (
                "  API children peak",
                ", ".join(f"{kb / 1024:.0f} MiB" for kb in run.pool_peaks_kb) or "none",
            ),
        ]
        if run.path == "worker":
            growth = (run.worker_peak_kb - run.worker_rss_before_kb) / 1024
            rows.append(
                (
                    "  worker peak growth",
                    f"{growth:.1f} MiB (RSS {run.worker_rss_before_kb / 1024:.0f} -> peak "
                    f"{run.worker_peak_kb / 1024:.0f} MiB)",
                )
            )
    by_path = {run.path: run for run in runs}
    inline, worker = by_path.get("inline"), by_path.get("worker")
    if inline is not None:
        inline_speedup = book.total_seconds / inline.seconds
        measured = f"inline {inline_speedup:.2f}x the cookbook"
        met = inline_speedup >= 5
        if worker is not None:
            measured += (
                f", worker path {book.total_seconds / worker.seconds:.2f}x "
                f"(its time {worker.seconds / inline.seconds:.2f}x inline's)"
            )
            met = met and worker.seconds <= 1.2 * inline.seconds
        record_goal(
            f"ingest vs cookbook ({size_mib:.0f} MiB)",
            measured,
            ">= 5x inline, worker within 1.2x of inline",
            met,
        )
    block("ingest", rows)
    ok = all(run.token_count == book.token_count for run in runs) and not math.isnan(floor_seconds)
    return 0 if ok else 1


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
