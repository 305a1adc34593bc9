"""Datasets as the API and the worker both handle them: options from a request,
running ingestion off the event loop, turning a report into records (and a
train/validation split), and the public view.

The parsing and validation themselves live in `service.ingest` and
`service.domain.datasets`; this module is the glue around them.
"""

from __future__ import annotations

import functools
import logging
import time
from pathlib import Path
from typing import Any, Literal

import anyio.to_thread
from pydantic import BaseModel, ConfigDict, Field

from service.domain.tokens import UnknownModelError
from service.errors import InvalidContent
from service.ingest import IngestOptions, IngestReport, ingest_examples, ingest_file, split_dataset
from service.resources import Resources
from service.settings import Settings
from service.spreadsheet import WorkbookLimits
from service.store.datasets import VALIDATING, DatasetStore
from service.store.records import new_id, now_iso

logger = logging.getLogger(__name__)

MAX_LISTED_ISSUES = 100


class DatasetRequest(BaseModel):
    """The optional fields of an upload (multipart form fields or JSON keys)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, max_length=200)
    format: Literal["auto", "jsonl", "csv", "tsv", "json", "xlsx"] = "auto"
    model: str | None = Field(default=None, max_length=128)
    system_prompt: str | None = Field(default=None, max_length=20_000)
    user_column: str = Field(default="user", min_length=1, max_length=200)
    assistant_column: str = Field(default="assistant", min_length=1, max_length=200)
    system_column: str | None = Field(default=None, min_length=1, max_length=200)
    validation_fraction: float | None = Field(default=None, gt=0, lt=1)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    n_epochs: int | None = Field(default=None, ge=1, le=50)
    default_model: str = Field(default="gpt-4o-mini-2024-07-18", exclude=True)

    @property
    def target_model(self) -> str:
        return self.model or self.default_model


def ingest_options(
    form: DatasetRequest,
    settings: Settings,
    *,
    min_examples: int = 10,
    deadline: float | None = None,
) -> IngestOptions:
    return IngestOptions(
        format=form.format,
        model=form.target_model,
        system_prompt=form.system_prompt,
        user_column=form.user_column,
        assistant_column=form.assistant_column,
        system_column=form.system_column,
        max_errors=MAX_LISTED_ISSUES,
        max_warnings=MAX_LISTED_ISSUES,
        max_file_bytes=settings.max_upload_bytes,
        min_examples=min_examples,
        n_epochs=form.n_epochs,
        price_table_path=settings.price_table_path,
        workbook_limits=WorkbookLimits(
            max_inflated_bytes=settings.xlsx_max_inflated_bytes,
            max_ratio=settings.xlsx_max_compression_ratio,
            memory_bytes=settings.xlsx_memory_limit_bytes,
        ),
        deadline=deadline,
    )


async def run_ingest(
    resources: Resources,
    source: Path,
    dest: Path,
    options: IngestOptions,
    *,
    examples: list[dict[str, Any]] | None = None,
) -> IngestReport:
    """Parse, validate and count in a thread (fanning out to the process pool),
    so the event loop keeps serving other requests."""
    try:
        if examples is not None:
            call = functools.partial(
                ingest_examples, examples, dest, options, executor=resources.executor
            )
        else:
            call = functools.partial(
                ingest_file, source, dest, options, executor=resources.executor
            )
        return await anyio.to_thread.run_sync(call)
    except UnknownModelError as exc:
        raise InvalidContent(
            str(exc),
            code="unknown_model",
            extra={
                "errors": [
                    {"line": None, "path": "model", "code": "unknown_model", "message": str(exc)}
                ]
            },
        ) from None


def issues(items: list[Any]) -> list[dict[str, Any]]:
    return [{"line": i.line, "path": i.path, "code": i.code, "message": i.message} for i in items]


def refuse_report(report: IngestReport) -> InvalidContent:
    first = report.errors[0] if report.errors else None
    where = ""
    if first is not None and first.line:
        where = (
            f" (first: line {first.line}{', ' + first.path if first.path else ''}: {first.message})"
        )
    elif first is not None:
        where = f" ({first.message})"
    return InvalidContent(
        f"The dataset has {report.error_total} problem(s){where}",
        code="invalid_dataset",
        extra={
            "errors": issues(report.errors),
            "error_total": report.error_total,
            "error_totals": report.error_totals,
            "example_count": report.example_count,
        },
    )


def _stats_fields(report: IngestReport) -> dict[str, Any]:
    data = report.to_dict()
    return {
        "kind": report.kind,
        "format": report.format,
        "model": report.model,
        "example_count": report.example_count,
        "token_count": report.token_count,
        "token_stats": data["tokens"],
        "estimate": data["estimate"],
        "warnings": issues(report.warnings),
        "warning_totals": report.warning_totals,
        "bytes": report.normalized_bytes,
        "normalized_sha256": report.normalized_sha256,
    }


async def build_records(
    resources: Resources,
    *,
    tenant: str,
    form: DatasetRequest,
    report: IngestReport,
    normalized: Path,
    filename: str | None,
    dataset_id: str | None = None,
) -> list[dict[str, Any]]:
    """Commit the normalized file(s) to the blob store and return the record(s).

    With `validation_fraction`, the normalized file is split deterministically
    (by `seed`) and each part is re-measured, so both datasets carry exact
    statistics and the training one its own estimate.
    """
    dataset_id = dataset_id or new_id("ds")
    base: dict[str, Any] = {
        "object": "dataset",
        "tenant": tenant,
        "name": form.name or filename or dataset_id,
        "status": "ready",
        "filename": filename,
        "sha256": report.source_sha256,
        "request": form.model_dump(mode="json"),
        "errors": [],
        "error_total": 0,
        "created_at": now_iso(),
    }
    if form.validation_fraction is None:
        resources.blobs.commit(normalized, dataset_id)
        return [
            {
                **base,
                **_stats_fields(report),
                "id": dataset_id,
                "role": "training",
                "validation_dataset_id": None,
                "training_dataset_id": None,
            }
        ]
    validation_id = new_id("ds")
    settings = resources.settings
    with (
        resources.blobs.scratch_file(".train") as train,
        resources.blobs.scratch_file(".valid") as valid,
    ):
        await anyio.to_thread.run_sync(
            functools.partial(
                split_dataset,
                normalized,
                train,
                valid,
                validation_fraction=form.validation_fraction,
                seed=form.seed,
                model=form.target_model,
            )
        )
        parts = []
        for path, minimum in ((train, 10), (valid, 1)):
            with resources.blobs.scratch_file(".part") as measured:
                options = ingest_options(
                    form.model_copy(update={"format": "jsonl", "system_prompt": None}),
                    settings,
                    min_examples=minimum,
                )
                part_report = await run_ingest(resources, path, measured, options)
                if not part_report.ok:
                    raise refuse_report(part_report)
                parts.append(part_report)
        resources.blobs.commit(train, dataset_id)
        resources.blobs.commit(valid, validation_id)
    training_record = {
        **base,
        **_stats_fields(parts[0]),
        "format": report.format,
        "id": dataset_id,
        "role": "training",
        "validation_dataset_id": validation_id,
        "training_dataset_id": None,
    }
    validation_record = {
        **base,
        **_stats_fields(parts[1]),
        "format": report.format,
        "id": validation_id,
        "name": f"{base['name']} (validation)",
        "role": "validation",
        "validation_dataset_id": None,
        "training_dataset_id": dataset_id,
    }
    return [training_record, validation_record]


def dataset_view(record: dict[str, Any]) -> dict[str, Any]:
    """The record without internal fields, with defaults for a dataset still validating."""
    return {
        "id": record["id"],
        "name": record["name"],
        "status": record["status"],
        "kind": record.get("kind"),
        "format": record.get("format"),
        "model": record["model"],
        "filename": record.get("filename"),
        "example_count": record.get("example_count"),
        "token_count": record.get("token_count"),
        "token_stats": record.get("token_stats"),
        "estimate": record.get("estimate"),
        "warnings": record.get("warnings", []),
        "warning_totals": record.get("warning_totals", {}),
        "errors": record.get("errors", []),
        "error_total": record.get("error_total", 0),
        "sha256": record.get("sha256"),
        "bytes": record.get("bytes"),
        "role": record.get("role", "training"),
        "validation_dataset_id": record.get("validation_dataset_id"),
        "training_dataset_id": record.get("training_dataset_id"),
        "created_at": record["created_at"],
    }


# Files younger than this may belong to a write in progress (a file is committed
# just before its record), so the sweep leaves them for its next round.
SWEEP_MIN_AGE_SECONDS = 600.0
SWEEP_BATCH = 500


def _older_than(path: Path, seconds: float, now: float) -> bool:
    try:
        return now - path.stat().st_mtime > seconds
    except FileNotFoundError:
        return False


async def sweep_orphan_files(resources: Resources) -> int:
    """Remove files no dataset owns: scratch files no request can still be writing,
    uploads waiting for a validation that will never run, normalized files of
    deleted datasets. Safe with several API and worker processes on one DATA_DIR.
    Returns how many files went."""
    settings = resources.settings
    blobs = resources.blobs
    store = DatasetStore(resources.redis, resources.keys)
    now = time.time()
    removed = 0
    # No request or validation runs longer than this, so its scratch file is abandoned.
    scratch_age = settings.upload_timeout_seconds + settings.validation_timeout_seconds
    for path in blobs.scratch_files():
        if _older_than(path, scratch_age, now):
            path.unlink(missing_ok=True)
            removed += 1
    for kind, ids in (("original", blobs.original_ids()), ("dataset", blobs.dataset_ids())):
        for start in range(0, len(ids), SWEEP_BATCH):
            batch = ids[start : start + SWEEP_BATCH]
            live = {r["id"]: r for r in await store.many(batch)}
            for dataset_id in batch:
                record = live.get(dataset_id)
                if kind == "original":
                    path = blobs.original_path(dataset_id)
                    orphan = record is None or record["status"] != VALIDATING
                else:
                    path = blobs.path(dataset_id)
                    orphan = record is None or record["status"] != "ready"
                if orphan and _older_than(path, SWEEP_MIN_AGE_SECONDS, now):
                    path.unlink(missing_ok=True)
                    removed += 1
    if removed:
        logger.info("removed orphaned dataset files", extra={"files": removed})
    return removed
