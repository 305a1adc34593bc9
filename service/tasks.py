"""The job contract between the API and the worker.

Both sides import this module and nothing else of each other: task names,
the queue, the serializer and typed `enqueue_*` helpers. Tasks take ids and
JSON values only and re-read state from Redis, so a task that runs twice (arq
runs at least once) or after a crash does the right thing.

Job ids are deterministic (`validate:{dataset_id}`), so enqueueing the same
work twice is a no-op while it is queued or running.

Jobs are not followed through arq: one task run per poll cost arq about nine
Redis round trips. The worker's follower (`service.jobs.following`) claims due
jobs in batches from the follow schedule (`service.store.following`); the API
puts a job there with `follow_job` and pulls it forward with `sync_job_now`.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from arq.connections import ArqRedis

from service.logs import request_id_var
from service.store.following import FollowSchedule

QUEUE_NAME: Final = "fts:queue"
# arq's own key prefixes (arq.constants); used to look at the queue directly.
ARQ_JOB_KEY_PREFIX: Final = "arq:job:"
ARQ_IN_PROGRESS_KEY_PREFIX: Final = "arq:in-progress:"

# The priority lane. arq's queue is a sorted set read lowest score (earliest due)
# first; urgent work (a provider's webhook, a final-state notification) is given a
# due time this far in the past, so it is picked before any backlog of polls that
# are merely due now, however long that backlog is.
PRIORITY_LEAD_MS: Final = 24 * 3600 * 1000
# arq sizes a job's expiry from its due time; urgent ones get the usual day.
URGENT_EXPIRES: Final = timedelta(days=1)

DELIVER_WEBHOOK: Final = "deliver_webhook"
VALIDATE_DATASET: Final = "validate_dataset"
RUN_EVALUATION: Final = "run_evaluation"
RECONCILE: Final = "reconcile"
PING: Final = "ping"


def serialize(job: dict[str, Any]) -> bytes:
    """JSON, never pickle: whoever can write to Redis must not run code in the worker."""
    return json.dumps(job, separators=(",", ":"), ensure_ascii=False).encode()


def deserialize(data: bytes) -> dict[str, Any]:
    value = json.loads(data)
    if not isinstance(value, dict):
        raise ValueError("queue entry is not a JSON object")
    return value


def deliver_job_id(delivery_id: str, attempt: int) -> str:
    # One arq job per attempt: a retry is a new deferred job, not arq's Retry, so a
    # schedule longer than arq's job expiry (24 h) still runs to the end.
    return f"deliver:{delivery_id}:{attempt}"


def validate_job_id(dataset_id: str) -> str:
    return f"validate:{dataset_id}"


def evaluation_job_id(evaluation_id: str) -> str:
    return f"evaluate:{evaluation_id}"


def _correlation() -> dict[str, Any]:
    request_id = request_id_var.get()
    return {"request_id": request_id} if request_id else {}


async def is_scheduled(queue: ArqRedis, arq_job_id: str) -> bool:
    """True when the arq job is queued, deferred or running right now."""
    found = await queue.exists(
        ARQ_JOB_KEY_PREFIX + arq_job_id, ARQ_IN_PROGRESS_KEY_PREFIX + arq_job_id
    )
    return bool(found)


def urgent_score() -> int:
    """A queue score that puts a job ahead of everything merely due (see PRIORITY_LEAD_MS)."""
    return int(time.time() * 1000) - PRIORITY_LEAD_MS


async def _enqueue(
    queue: ArqRedis,
    function: str,
    arq_job_id: str,
    *args: Any,
    defer_by: float | None = None,
    urgent: bool = False,
) -> bool:
    deferred = defer_by is not None and defer_by > 0
    job = await queue.enqueue_job(
        function,
        *args,
        _job_id=arq_job_id,
        _queue_name=QUEUE_NAME,
        _defer_by=defer_by if deferred else None,
        _defer_until=datetime.fromtimestamp(urgent_score() / 1000, UTC)
        if urgent and not deferred
        else None,
        _expires=URGENT_EXPIRES if urgent and not deferred else None,
        **_correlation(),
    )
    return job is not None


def now_ms() -> int:
    return int(time.time() * 1000)


async def follow_job(schedule: FollowSchedule, job_id: str) -> bool:
    """Have the worker follow a job, its next step due now. False when already followed."""
    return bool(await schedule.schedule([job_id], now_ms()))


async def sync_job_now(schedule: FollowSchedule, job_id: str) -> None:
    """Step a job before anything merely due, even if it waits on a long poll delay.

    If a follower is stepping it right now, it is due again the moment that step
    ends (and the running step, which sees the job's `poke` flag, raised in the
    same write, when it writes, usually goes round once more at once).
    """
    await schedule.schedule([job_id], urgent_score(), poke=True)


async def sync_upstream_job_now(
    schedule: FollowSchedule, provider: str, upstream_id: str
) -> str | None:
    """`sync_job_now` for the job a provider's job id names (one round trip); returns
    our job's id, or None when the provider's job is none of ours."""
    return await schedule.poke_upstream(provider, upstream_id, urgent_score())


async def enqueue_delivery(
    queue: ArqRedis,
    delivery_id: str,
    *,
    attempt: int,
    defer_by: float | None = None,
    urgent: bool = False,
) -> bool:
    """Schedule one delivery attempt; `urgent` (a job's final state) takes the priority lane."""
    return await _enqueue(
        queue,
        DELIVER_WEBHOOK,
        deliver_job_id(delivery_id, attempt),
        delivery_id,
        attempt,
        defer_by=defer_by,
        urgent=urgent,
    )


async def enqueue_dataset_validation(queue: ArqRedis, dataset_id: str) -> bool:
    return await _enqueue(queue, VALIDATE_DATASET, validate_job_id(dataset_id), dataset_id)


async def enqueue_evaluation(
    queue: ArqRedis, evaluation_id: str, *, defer_by: float | None = None
) -> bool:
    """Schedule the next run of an evaluation. False when one is already scheduled."""
    return await _enqueue(
        queue, RUN_EVALUATION, evaluation_job_id(evaluation_id), evaluation_id, defer_by=defer_by
    )


async def run_evaluation_now(queue: ArqRedis, evaluation_id: str) -> None:
    """Pull a deferred run forward (a cancel should not wait out a backoff), or enqueue one."""
    moved = await queue.zadd(
        QUEUE_NAME, {evaluation_job_id(evaluation_id): time.time() * 1000}, xx=True, ch=True
    )
    if not moved:
        await enqueue_evaluation(queue, evaluation_id)


async def enqueue_ping(queue: ArqRedis, token: str) -> bool:
    """A no-op task that records the request id it ran under (used by health checks and tests)."""
    return await _enqueue(queue, PING, f"ping:{token}", token)
