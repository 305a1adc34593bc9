"""`validate_dataset`: the background path for uploads too large to validate in
the request. The dataset moves from `validating` to exactly one final state,
`ready` or `invalid` (with the same line-by-line errors a synchronous upload
would get), whatever happens on the way:

- a deleted dataset stays deleted: the final write is a compare-and-set on the
  `validating` record, which finds a tombstone instead, and files this task
  committed are removed again;
- a validation that outlives its time limit, or fails in any unexpected way,
  ends `invalid` with a problem saying so;
- a worker that dies mid-validation leaves the task to arq's retry and the
  reconciler; after MAX_ATTEMPTS starts the dataset is failed.

The uploaded original is removed once the dataset reaches its final state.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from service import tasks
from service.datasets import (
    DatasetRequest,
    build_records,
    ingest_options,
    issues,
    run_ingest,
)
from service.domain.datasets import issues as codes
from service.errors import InvalidContent
from service.resources import Resources
from service.store.datasets import VALIDATING, DatasetStore
from service.store.records import RecordGone, now_iso
from worker.context import WorkerContext
from worker.task_lock import held_task_lock

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
# Time kept back from the task's own limit to record the verdict before arq stops it.
VERDICT_MARGIN_SECONDS = 15.0


async def validate_dataset(ctx: WorkerContext, dataset_id: str) -> str:
    resources = ctx["resources"]
    store = DatasetStore(resources.redis, resources.keys)
    try:
        record = await store.update(dataset_id, _count_attempt)
    except RecordGone:
        resources.blobs.delete_all(dataset_id)
        return "gone"
    if record["status"] != VALIDATING:
        return "nothing to do"
    if record["validation_attempts"] > MAX_ATTEMPTS:
        return await _fail(
            resources,
            store,
            dataset_id,
            codes.VALIDATION_FAILED,
            f"Validation was interrupted {MAX_ATTEMPTS} times (the worker stopped while "
            "reading the file); upload it again.",
        )
    limit = resources.settings.validation_timeout_seconds
    deadline = time.monotonic() + max(1.0, limit - VERDICT_MARGIN_SECONDS)
    try:
        async with held_task_lock(ctx):
            return await _validate(resources, store, record, deadline)
    except Exception:
        logger.exception("dataset validation failed", extra={"dataset_id": dataset_id})
        return await _fail(
            resources,
            store,
            dataset_id,
            codes.VALIDATION_FAILED,
            "The service failed while validating this file; upload it again, and report it "
            "if it happens again.",
        )


def _count_attempt(record: dict[str, Any]) -> dict[str, Any] | None:
    if record["status"] != VALIDATING:
        return None
    record["validation_attempts"] = int(record.get("validation_attempts", 0)) + 1
    return record


async def _validate(
    resources: Resources, store: DatasetStore, record: dict[str, Any], deadline: float
) -> str:
    dataset_id = record["id"]
    source = resources.blobs.original_path(dataset_id)
    if not source.exists():
        return await _fail(
            resources, store, dataset_id, codes.VALIDATION_FAILED, "The uploaded file is gone."
        )
    form = DatasetRequest.model_validate(record["request"] | {"default_model": record["model"]})
    options = ingest_options(form, resources.settings, deadline=deadline)
    with resources.blobs.scratch_file(".jsonl") as dest:
        try:
            report = await run_ingest(resources, source, dest, options)
            if not report.ok:
                return await _mark_invalid(
                    resources,
                    store,
                    dataset_id,
                    issues(report.errors),
                    f"{report.error_total} problem(s)",
                    total=report.error_total,
                    example_count=report.example_count,
                )
            records = await build_records(
                resources,
                tenant=record["tenant"],
                form=form,
                report=report,
                normalized=dest,
                filename=record.get("filename"),
                dataset_id=dataset_id,
            )
        except InvalidContent as refused:
            found = refused.extra.get("errors", [])
            return await _mark_invalid(resources, store, dataset_id, found, refused.detail)
    records[0]["created_at"] = record["created_at"]
    verdict = await store.finish_validation(dataset_id, records)
    if verdict == "deleted":
        # Deleted while we worked: take back the files we committed after the delete.
        for written in records:
            resources.blobs.delete(written["id"])
        resources.blobs.delete_original(dataset_id)
        logger.info("dataset deleted during validation", extra={"dataset_id": dataset_id})
        return "gone"
    if verdict == "already_final":
        return "nothing to do"  # another run finished first; the sweep takes our extras
    resources.blobs.delete_original(dataset_id)
    logger.info(
        "dataset validated", extra={"dataset_id": dataset_id, "examples": report.example_count}
    )
    return "ready"


async def _fail(
    resources: Resources, store: DatasetStore, dataset_id: str, code: str, message: str
) -> str:
    found = [{"line": None, "path": None, "code": code, "message": message}]
    return await _mark_invalid(resources, store, dataset_id, found, message)


async def _mark_invalid(
    resources: Resources,
    store: DatasetStore,
    dataset_id: str,
    errors: list[dict[str, Any]],
    detail: str,
    *,
    total: int | None = None,
    example_count: int | None = None,
) -> str:
    def change(record: dict[str, Any]) -> dict[str, Any] | None:
        if record["status"] != VALIDATING:
            return None
        record.update(
            status="invalid",
            errors=errors,
            error_total=total if total is not None else max(1, len(errors)),
            invalid_reason=detail,
            updated_at=now_iso(),
        )
        if example_count is not None:
            record["example_count"] = example_count
        return record

    try:
        await store.update(dataset_id, change)
    except RecordGone:
        pass  # deleted meanwhile: nothing to mark
    resources.blobs.delete_original(dataset_id)
    return "invalid"


async def requeue_validations(resources: Resources) -> int:
    """For the reconciler: every dataset still `validating` has its task queued."""
    store = DatasetStore(resources.redis, resources.keys)
    scheduled = 0
    for dataset_id in sorted(await store.validating_ids()):
        if await tasks.is_scheduled(resources.queue, tasks.validate_job_id(dataset_id)):
            continue
        if await tasks.enqueue_dataset_validation(resources.queue, dataset_id):
            scheduled += 1
    return scheduled
