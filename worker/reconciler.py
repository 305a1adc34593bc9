"""The reconciler: a cron that makes sure no work is forgotten.

Every non-terminal job (and every finished job whose final webhook event was
not yet emitted) must have its sync scheduled; every pending delivery must
have its next attempt queued; every dataset still validating must have its
validation queued. Losing a queue entry (a Redis failover, a flushed queue,
an arq job that expired) therefore delays work by at most one reconcile
interval, and never loses it. About once an hour it also removes files no
dataset owns.
"""

from __future__ import annotations

import logging

from service import tasks
from service.datasets import sweep_orphan_files
from service.store.jobs import JobStore
from worker.context import WorkerContext
from worker.dataset_validation import requeue_validations
from worker.webhook_delivery import requeue_pending

# Orphaned files are looked for at most this often (one worker does it).
SWEEP_EVERY_SECONDS = 3600

logger = logging.getLogger(__name__)


async def reconcile(ctx: WorkerContext) -> dict[str, int]:
    resources = ctx["resources"]
    jobs = JobStore(resources.redis, resources.keys)
    scheduled_jobs = 0
    for job_id in sorted(await jobs.active_ids()):
        if await tasks.is_scheduled(resources.queue, tasks.sync_job_id(job_id)):
            continue
        if await tasks.enqueue_sync_job(resources.queue, job_id):
            scheduled_jobs += 1
    scheduled_deliveries = await requeue_pending(resources)
    scheduled_validations = await requeue_validations(resources)
    if scheduled_jobs or scheduled_deliveries or scheduled_validations:
        logger.info(
            "reconciler rescheduled work",
            extra={
                "jobs": scheduled_jobs,
                "deliveries": scheduled_deliveries,
                "validations": scheduled_validations,
            },
        )
    swept = 0
    if await resources.redis.set(resources.keys.sweep_lock, "1", nx=True, ex=SWEEP_EVERY_SECONDS):
        swept = await sweep_orphan_files(resources)
    return {
        "jobs": scheduled_jobs,
        "deliveries": scheduled_deliveries,
        "validations": scheduled_validations,
        "files_swept": swept,
    }
