"""`validate_dataset`: the background path for uploads too large to validate in
the request. The dataset moves from `validating` to `ready` or `invalid`
(with the same line-by-line errors a synchronous upload would get)."""

from __future__ import annotations

import logging
from typing import Any

from service.datasets import (
    DatasetRequest,
    build_records,
    ingest_options,
    issues,
    run_ingest,
)
from service.errors import Unprocessable
from service.store.datasets import DatasetStore
from service.store.records import dumps, now_iso
from worker.context import WorkerContext

logger = logging.getLogger(__name__)


async def validate_dataset(ctx: WorkerContext, dataset_id: str) -> str:
    resources = ctx["resources"]
    store = DatasetStore(resources.redis, resources.keys)
    record = await store.get(dataset_id)
    if record is None or record["status"] != "validating":
        return "nothing to do"
    source = resources.blobs.original_path(dataset_id)
    if not source.exists():
        await store.update(dataset_id, lambda r: _invalid(r, [], "The uploaded file is gone"))
        return "invalid"
    form = DatasetRequest.model_validate(record["request"] | {"default_model": record["model"]})
    with resources.blobs.scratch_file(".jsonl") as dest:
        try:
            report = await run_ingest(
                resources, source, dest, ingest_options(form, resources.settings)
            )
        except Unprocessable as refused:
            found, why = refused.extra.get("errors", []), refused.detail
            await store.update(dataset_id, lambda r: _invalid(r, found, why))
            return "invalid"
        if not report.ok:
            errors = issues(report.errors)
            await store.update(
                dataset_id,
                lambda r: _invalid(
                    r, errors, f"{report.error_total} problem(s)", total=report.error_total
                ),
            )
            resources.blobs.delete_original(dataset_id)
            return "invalid"
        try:
            records = await build_records(
                resources,
                tenant=record["tenant"],
                form=form,
                report=report,
                normalized=dest,
                filename=record.get("filename"),
                dataset_id=dataset_id,
            )
        except Unprocessable as refused:
            found, why = refused.extra.get("errors", []), refused.detail
            await store.update(dataset_id, lambda r: _invalid(r, found, why))
            return "invalid"
    primary, *others = records
    primary["created_at"] = record["created_at"]
    if others:
        await store.create(*others)
    await resources.redis.set(resources.keys.dataset(dataset_id), dumps(primary))
    resources.blobs.delete_original(dataset_id)
    logger.info(
        "dataset validated", extra={"dataset_id": dataset_id, "examples": report.example_count}
    )
    return "ready"


def _invalid(
    record: dict[str, Any], errors: list[dict[str, Any]], detail: str, *, total: int | None = None
) -> dict[str, Any]:
    record.update(
        status="invalid",
        errors=errors,
        error_total=total if total is not None else max(1, len(errors)),
        invalid_reason=detail,
        updated_at=now_iso(),
    )
    return record
