"""Deleting datasets, and removing files no dataset owns.

A delete leaves a tombstone (see `service.store.records`) before the files
go, so a worker still validating the dataset cannot bring it back, and
removes the files it commits afterwards itself. The sweep removes what a
killed process left behind: scratch files no request can still be writing,
uploads waiting for a validation that will never run, normalized files of
deleted datasets. It is safe with several API and worker processes sharing
one DATA_DIR.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import anyio.to_thread
from redis.exceptions import RedisError

from service.domain.jobs import is_terminal
from service.domain.records import Dataset
from service.errors import Conflict, NotFound
from service.resources import Resources
from service.store.datasets import VALIDATING

logger = logging.getLogger(__name__)

# Files younger than this may belong to a write in progress (a file is committed
# just before its record), so the sweep leaves them for its next round.
SWEEP_MIN_AGE_SECONDS = 600.0
SWEEP_BATCH = 500


async def delete_dataset(resources: Resources, tenant: str, dataset_id: str) -> None:
    """Refused (409) while an unfinished job uses the dataset."""
    await resources.datasets.get_for_tenant(tenant, dataset_id)
    users = await resources.jobs.uses_of_dataset(dataset_id)
    busy = [job.id for job in users if not is_terminal(job.status)]
    if busy:
        raise Conflict(
            f"Dataset {dataset_id} is used by unfinished jobs: {', '.join(busy)}",
            code="dataset_in_use",
            extra={"job_ids": busy},
        )

    def owned(record: Dataset) -> None:
        if record.tenant != tenant:
            raise NotFound(f"No dataset {dataset_id} for this tenant")

    # The tombstone stops a worker still validating it from writing it back;
    # files it commits after this point are removed by that worker.
    await resources.datasets.delete(dataset_id, owned)
    await anyio.to_thread.run_sync(resources.blobs.delete_all, dataset_id)


def _older_than(path: Path, seconds: float, now: float) -> bool:
    try:
        return now - path.stat().st_mtime > seconds
    except FileNotFoundError:
        return False


async def sweep_orphan_files(resources: Resources) -> int:
    """Remove files no dataset owns; returns how many went."""
    settings = resources.settings
    blobs = resources.blobs
    now = time.time()
    removed = 0
    # No request or validation runs longer than this, so its scratch file is abandoned.
    scratch_age = settings.upload_timeout_seconds + settings.validation_timeout_seconds
    for path in blobs.scratch_files():
        if _older_than(path, scratch_age, now):
            path.unlink(missing_ok=True)
            removed += 1
    kinds = (
        ("original", blobs.original_ids()),
        ("source", blobs.source_ids()),
        ("dataset", blobs.dataset_ids()),
    )
    for kind, ids in kinds:
        for start in range(0, len(ids), SWEEP_BATCH):
            batch = ids[start : start + SWEEP_BATCH]
            live = {r.id: r for r in await resources.datasets.many(batch)}
            for dataset_id in batch:
                record = live.get(dataset_id)
                if kind == "original":
                    path = blobs.original_path(dataset_id)
                    orphan = record is None or record.status != VALIDATING
                elif kind == "source":
                    path = blobs.source_path(dataset_id)
                    orphan = record is None
                else:
                    path = blobs.path(dataset_id)
                    orphan = record is None or record.status != "ready"
                if orphan and _older_than(path, SWEEP_MIN_AGE_SECONDS, now):
                    path.unlink(missing_ok=True)
                    removed += 1
    if removed:
        logger.info("removed orphaned dataset files", extra={"files": removed})
    return removed


async def sweep_at_start(resources: Resources) -> None:
    """The sweep when a process starts; never blocks start-up."""
    try:
        await sweep_orphan_files(resources)
    except (RedisError, OSError) as exc:
        logger.warning("could not sweep orphaned files at start", extra={"error": repr(exc)})
