"""Validating a large upload in the worker: the dataset moves from `validating`
to exactly one final state, `ready` or `invalid` (with the same line-by-line
errors a synchronous upload would get), whatever happens on the way:

- a deleted dataset stays deleted: the final write is a compare-and-set on
  the `validating` record, which finds a tombstone instead, and files this
  run committed are removed again;
- a validation that outlives its time limit, or fails in any unexpected way,
  ends `invalid` with a problem saying so;
- a worker that dies mid-validation leaves the task to the queue's retry and
  the reconciler; after MAX_ATTEMPTS starts the dataset is failed.

The uploaded original is removed once the dataset reaches its final state.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, replace
from typing import Any

from redis.exceptions import RedisError

from service import tasks
from service.datasets.creation import (
    DatasetCreation,
    DatasetRequest,
    InvalidDataset,
    Upload,
    file_minimum,
    ingest_options,
    issues,
)
from service.domain.datasets import issues as codes
from service.domain.records import Dataset, DatasetIssueRecord, DatasetProgress
from service.domain.stamps import iso_from_unix, now_iso
from service.resources import Resources
from service.store.datasets import VALIDATING
from service.store.records import RecordGone

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
PROGRESS_WRITE_SECONDS = 1.0
# The queue stops a validation task this long after its own limit: time to record
# the verdict (the limit itself is enforced here, between chunks of the file).
VERDICT_MARGIN_SECONDS = 30.0


@dataclass
class _Progress:
    """What the ingesting thread reported last; read by the task that writes it."""

    started: float
    bytes_done: int = 0
    bytes_total: int = 0
    examples_done: int = 0

    def update(self, done: int, total: int, examples: int) -> None:
        self.bytes_done, self.bytes_total, self.examples_done = done, total, examples

    def view(self) -> DatasetProgress | None:
        if not self.bytes_total:
            return None
        fraction = self.bytes_done / self.bytes_total
        elapsed = time.time() - self.started
        # The pace so far, carried to the end of the file.
        finish = self.started + elapsed / fraction if fraction > 0 else None
        return DatasetProgress(
            bytes_done=self.bytes_done,
            bytes_total=self.bytes_total,
            examples_done=self.examples_done,
            percent=round(100 * fraction, 1),
            estimated_finish=iso_from_unix(finish),
        )


def _count_attempt(record: Dataset) -> Dataset | None:
    if record.status != VALIDATING:
        return None
    record.validation_attempts += 1
    return record


class DatasetValidation:
    def __init__(self, resources: Resources) -> None:
        self.resources = resources
        self.store = resources.datasets
        self.blobs = resources.blobs

    async def run(self, dataset_id: str) -> str:
        """Validate one dataset; returns what became of it."""
        try:
            record = await self.store.update(dataset_id, _count_attempt)
        except RecordGone:
            self.blobs.delete_all(dataset_id)
            return "gone"
        if record.status != VALIDATING:
            return "nothing to do"
        if record.validation_attempts > MAX_ATTEMPTS:
            return await self._fail(
                dataset_id,
                codes.VALIDATION_FAILED,
                f"Validation was interrupted {MAX_ATTEMPTS} times (the worker stopped while "
                "reading the file); upload it again.",
            )
        deadline = time.monotonic() + self.resources.settings.validation_timeout_seconds
        try:
            return await self._validate(record, deadline)
        except Exception:
            logger.exception("dataset validation failed", extra={"dataset_id": dataset_id})
            return await self._fail(
                dataset_id,
                codes.VALIDATION_FAILED,
                "The service failed while validating this file; upload it again, and report "
                "it if it happens again.",
            )

    async def _validate(self, record: Dataset, deadline: float) -> str:
        dataset_id = record.id
        source = self.blobs.original_path(dataset_id)
        if not source.exists():
            return await self._fail(
                dataset_id, codes.VALIDATION_FAILED, "The uploaded file is gone."
            )
        creation = DatasetCreation(self.resources)
        form = DatasetRequest.model_validate(record.request | {"default_model": record.model})
        # The API hashed the file as it arrived; the record keeps that fingerprint.
        upload = Upload(
            path=source,
            filename=record.filename,
            size=source.stat().st_size,
            sha256=record.sha256,
        )
        meter = _Progress(time.time())
        reporter = asyncio.create_task(self._report(dataset_id, meter))
        try:
            spec = await self.resources.providers.spec(form.target_model)
            options = ingest_options(
                form,
                spec,
                self.resources.settings,
                min_examples=file_minimum(record.origin == "files"),
                deadline=deadline,
            )
            options = replace(options, progress=meter.update)
            with self.blobs.scratch_file(".jsonl") as dest:
                report = await creation.run_ingest(options, dest, upload=upload)
                if not report.ok:
                    return await self._mark_invalid(
                        dataset_id,
                        issues(report.errors),
                        f"{report.error_total} problem(s)",
                        total=report.error_total,
                        example_count=report.example_count,
                    )
                records = await creation.build_records(
                    tenant=record.tenant,
                    form=form,
                    spec=spec,
                    report=report,
                    normalized=dest,
                    filename=record.filename,
                    dataset_id=dataset_id,
                )
        except InvalidDataset as refused:
            return await self._mark_invalid(
                dataset_id, refused.extra.get("errors", []), refused.detail
            )
        finally:
            reporter.cancel()
            # Not `await reporter` under suppress(CancelledError): that would also
            # swallow a cancel aimed at this validation while it waits.
            await asyncio.wait({reporter})
        # What the upload itself decided stays: its time, and for /v1 files the
        # origin and the size as uploaded.
        records[0].created_at = record.created_at
        records[0].origin = record.origin
        records[0].source_bytes = record.source_bytes
        verdict = await self.store.finish_validation(dataset_id, records)
        if verdict == "deleted":
            # Deleted while we worked: take back the files we committed after the delete.
            for written in records:
                self.blobs.delete(written.id)
            self.blobs.delete_original(dataset_id)
            logger.info("dataset deleted during validation", extra={"dataset_id": dataset_id})
            return "gone"
        if verdict == "already_final":
            return "nothing to do"  # another run finished first; the sweep takes our extras
        self.blobs.retire_original(dataset_id, keep_source=record.origin == "files")
        logger.info(
            "dataset validated",
            extra={"dataset_id": dataset_id, "examples": report.example_count},
        )
        return "ready"

    async def _report(self, dataset_id: str, meter: _Progress) -> None:
        """Write how far the validation has come, every PROGRESS_WRITE_SECONDS."""
        written: DatasetProgress | None = None
        while True:
            await asyncio.sleep(PROGRESS_WRITE_SECONDS)
            view = meter.view()
            if view is None or view == written:
                continue

            def change(record: Dataset, view: DatasetProgress = view) -> Dataset | None:
                if record.status != VALIDATING:
                    return None
                record.progress = view
                return record

            try:
                await self.store.update(dataset_id, change)
            except RecordGone:
                return
            except (RedisError, OSError) as exc:  # progress is a courtesy; the work goes on
                logger.warning("could not write validation progress", extra={"error": repr(exc)})
                continue
            written = view

    async def _fail(self, dataset_id: str, code: str, message: str) -> str:
        found = [{"line": None, "path": None, "code": code, "message": message}]
        return await self._mark_invalid(dataset_id, found, message)

    async def _mark_invalid(
        self,
        dataset_id: str,
        errors: list[dict[str, Any]],
        detail: str,
        *,
        total: int | None = None,
        example_count: int | None = None,
    ) -> str:
        def change(record: Dataset) -> Dataset | None:
            if record.status != VALIDATING:
                return None
            record.status = "invalid"
            record.progress = None
            record.errors = [DatasetIssueRecord(**e) for e in errors]
            record.error_total = total if total is not None else max(1, len(errors))
            record.invalid_reason = detail
            record.updated_at = now_iso()
            if example_count is not None:
                record.example_count = example_count
            return record

        try:
            marked = await self.store.update(dataset_id, change)
        except RecordGone:
            self.blobs.delete_original(dataset_id)  # deleted meanwhile: nothing to mark
            return "invalid"
        self.blobs.retire_original(dataset_id, keep_source=marked.origin == "files")
        return "invalid"

    async def requeue(self) -> int:
        """For the reconciler: every dataset still `validating` has its task queued."""
        queue = self.resources.queue
        scheduled = 0
        for dataset_id in sorted(await self.store.validating_ids()):
            if await tasks.is_scheduled(queue, tasks.validate_job_id(dataset_id)):
                continue
            if await tasks.enqueue_dataset_validation(queue, dataset_id):
                scheduled += 1
        return scheduled
