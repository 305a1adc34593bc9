# ruff: noqa: RUF001  (full-width punctuation in the Japanese examples)
"""The job-running stack shared by the lifecycle and chaos benchmarks.

redis-server, `python -m service`, the simulator (its OpenAI-style webhooks
pointed at a `Tap`), one `python -m worker`, and a `Receiver` for the
service's own job webhooks. Jobs are created concurrently through the API,
each with `webhook_url` set to the receiver.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from bench.hooks import Receiver, Tap, running_receiver, running_tap
from bench.stack import AUTH, OPENAI_WEBHOOK_SECRET, Proc, Stack

MODEL = "gpt-4o-mini-2024-07-18"
FINAL = {"succeeded", "failed", "cancelled"}
EXAMPLES = [
    {
        "messages": [
            {"role": "system", "content": "西村ひろゆきBot"},
            {"role": "user", "content": f"質問 {i}: それってあなたの感想ですよね？"},
            {"role": "assistant", "content": f"回答 {i}: なんかそういうデータあるんですか？"},
        ]
    }
    for i in range(12)
]


@dataclass
class JobStack:
    stack: Stack
    env: dict[str, str]
    api: Proc
    base: str
    sim_base: str
    worker: Proc
    tap: Tap
    receiver: Receiver

    def restart_worker(self) -> Proc:
        self.worker = self.stack.worker(self.env)
        return self.worker


@contextlib.contextmanager
def job_stack(
    *,
    job_seconds: float,
    forward_webhooks: bool,
    poll_min: float,
    poll_max: float,
    sim_args: tuple[str, ...] = (),
    env_extra: dict[str, str] | None = None,
) -> Iterator[JobStack]:
    with Stack() as stack, running_receiver() as receiver:
        redis_url = stack.redis()
        env = stack.service_env(
            redis_url,
            POLL_MIN_SECONDS=str(poll_min),
            POLL_MAX_SECONDS=str(poll_max),
            **(env_extra or {}),
        )
        # The API's port is only known once it runs, and the tap must know where to
        # forward before the simulator starts: start the API first, then the tap.
        api, base = stack.api(env)
        with running_tap(f"{base}/webhooks/openai" if forward_webhooks else None) as tap:
            _, sim_base = stack.simulator(
                "--job-seconds",
                str(job_seconds),
                "--webhook-url",
                tap.url,
                "--webhook-secret",
                OPENAI_WEBHOOK_SECRET,
                *sim_args,
            )
            env["OPENAI_BASE_URL"] = f"{sim_base}/v1"
            # The API reads OPENAI_BASE_URL only for chat; jobs go through the worker.
            worker = stack.worker(env, wait_api=base)
            yield JobStack(stack, env, api, base, sim_base, worker, tap, receiver)


def create_dataset(base: str) -> str:
    """The bench tenant's dataset; also its job webhook secret, which jobs with a
    `webhook_url` need (the receiver here counts deliveries, it does not verify)."""
    secret = httpx.post(f"{base}/webhooks/job-secret", headers=AUTH, timeout=30)
    if secret.status_code not in (201, 409):
        secret.raise_for_status()
    response = httpx.post(
        f"{base}/datasets", headers=AUTH, json={"name": "bench", "examples": EXAMPLES}, timeout=30
    )
    response.raise_for_status()
    return str(response.json()["id"])


async def _create_jobs(base: str, dataset_id: str, count: int, webhook_url: str) -> list[str]:
    limits = httpx.Limits(max_connections=32)
    async with httpx.AsyncClient(base_url=base, headers=AUTH, timeout=60, limits=limits) as client:
        gate = asyncio.Semaphore(32)

        async def one(index: int) -> str:
            body = {
                "dataset_id": dataset_id,
                "model": MODEL,
                "suffix": f"b{index}",
                "webhook_url": webhook_url,
            }
            async with gate:
                problem = ""
                for attempt in range(5):
                    try:
                        response = await client.post(
                            "/jobs", json=body, headers={"Idempotency-Key": f"bench-{index}"}
                        )
                    except httpx.TransportError as exc:
                        # A connection the starved API closed under a reused request; the
                        # Idempotency-Key makes the retry return the same job.
                        transport_retries.append(repr(exc))
                        problem = repr(exc)
                    else:
                        if response.status_code == 202:
                            return str(response.json()["id"])
                        problem = f"{response.status_code} {response.text[:300]}"
                    await asyncio.sleep(0.2 * (attempt + 1))
                raise RuntimeError(f"POST /jobs: {problem}")

        transport_retries: list[str] = []
        ids = list(await asyncio.gather(*(one(i) for i in range(count))))
        if transport_retries:
            print(f"   {len(transport_retries)} POST /jobs retried after a transport error")
        return ids


def create_jobs(base: str, dataset_id: str, count: int, webhook_url: str) -> list[str]:
    """Create `count` jobs, 32 requests in flight (as fast as the API takes them)."""
    return asyncio.run(_create_jobs(base, dataset_id, count, webhook_url))


def all_jobs(base: str) -> list[dict[str, Any]]:
    """Every job of the tenant, through the paginated list."""
    jobs: list[dict[str, Any]] = []
    after = None
    with httpx.Client(base_url=base, headers=AUTH, timeout=60) as client:
        while True:
            params: dict[str, Any] = {"limit": 100}
            if after:
                params["after"] = after
            page = client.get("/jobs", params=params).json()
            jobs.extend(page["data"])
            if not page["has_more"] or not page["data"]:
                return jobs
            after = page["data"][-1]["id"]


def wait_final_webhooks(receiver: Receiver, job_ids: set[str], deadline: float) -> bool:
    """True once every job has had a final-state webhook; False at the deadline."""
    while time.monotonic() < deadline:
        done = {d.job_id for d in receiver.snapshot() if d.status in FINAL}
        if job_ids <= done:
            return True
        time.sleep(0.2)
    return False


def upstream_jobs_by_metadata(sim_base: str) -> dict[str, int]:
    """How many upstream jobs the simulator holds per `service_job_id` metadata value."""
    stats = httpx.get(f"{sim_base}/_sim/stats", timeout=30).json()
    return dict(stats["jobs"]["by_metadata"].get("service_job_id", {}))
