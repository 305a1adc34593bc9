"""Making a dataset from an upload: the one place both the API and the worker
go through.

Small uploads are judged at once (parsing and tokenizing fan out over the
process pool): the dataset is stored `ready`, or refused with every bad line
and nothing stored. Uploads above SYNC_VALIDATION_MAX_BYTES are stored
`validating` and handed to the worker (`service.datasets.validation`), which
ends them `ready` or `invalid` with the same verdict.

With `validation_fraction` the normalized file is split deterministically
(by `seed`) into a training and a validation dataset; both parts are measured
from the per-example counts the ingestion kept, so nothing is read twice.
"""

from __future__ import annotations

import functools
import shutil
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path
from typing import Any, Literal

import anyio.to_thread
from pydantic import BaseModel, ConfigDict, Field

from service import tasks
from service.datasets.ingest import (
    IngestOptions,
    IngestReport,
    PartStats,
    ingest_examples,
    ingest_file,
    split_dataset,
)
from service.datasets.spreadsheet import WorkbookLimits
from service.domain.catalog import ModelSpec
from service.domain.datasets import issues as codes
from service.domain.datasets.issues import Issue
from service.domain.datasets.stats import summarize_tokens
from service.domain.pricing import estimate_training
from service.domain.records import Dataset, DatasetIssueRecord
from service.domain.stamps import new_id, now_iso
from service.errors import InvalidContent
from service.resources import Resources
from service.settings import Settings

MAX_LISTED_ISSUES = 100
SPLIT_MIN_TRAINING_EXAMPLES = 10
SPLIT_MIN_VALIDATION_EXAMPLES = 1
MODEL_TRAINING_CLOSED = "model_training_closed"


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


@dataclass(frozen=True, slots=True)
class Upload:
    """A file the edge received (written to a scratch path), with what it knows of it."""

    path: Path
    filename: str | None
    size: int
    # The SHA-256 of the bytes at `path`, when whoever wrote them hashed them on the way.
    sha256: str | None = None


class InvalidDataset(InvalidContent):
    code = "invalid_dataset"


def ingest_options(
    form: DatasetRequest,
    spec: ModelSpec,
    settings: Settings,
    *,
    min_examples: int | None = None,
    deadline: float | None = None,
) -> IngestOptions:
    return IngestOptions(
        format=form.format,
        spec=spec,
        system_prompt=form.system_prompt,
        user_column=form.user_column,
        assistant_column=form.assistant_column,
        system_column=form.system_column,
        max_errors=MAX_LISTED_ISSUES,
        max_warnings=MAX_LISTED_ISSUES,
        max_file_bytes=settings.max_upload_bytes,
        min_examples=min_examples,
        n_epochs=form.n_epochs,
        workbook_limits=WorkbookLimits(
            max_inflated_bytes=settings.xlsx_max_inflated_bytes,
            max_ratio=settings.xlsx_max_compression_ratio,
            memory_bytes=settings.xlsx_memory_limit_bytes,
        ),
        deadline=deadline,
    )


# What makes an upload "not JSONL of objects": refused at once even under file rules.
UNREADABLE = frozenset(
    {
        codes.INVALID_JSON,
        codes.DATA_TYPE,
        codes.ENCODING,
        codes.EMPTY_FILE,
        codes.TOO_DEEPLY_NESTED,
        codes.FILE_TOO_LARGE,
    }
)


def unreadable(report: IngestReport) -> bool:
    return any(code in UNREADABLE for code in report.error_totals)


def file_minimum(as_file: bool) -> int | None:
    """Under file rules the example minimum is the job's to enforce (None: the model's)."""
    return 0 if as_file else None


def issues(items: list[Issue]) -> list[dict[str, Any]]:
    return [{"line": i.line, "path": i.path, "code": i.code, "message": i.message} for i in items]


def refusal(report: IngestReport) -> InvalidDataset:
    first = report.errors[0] if report.errors else None
    where = ""
    if first is not None and first.line:
        where = (
            f" (first: line {first.line}{', ' + first.path if first.path else ''}: {first.message})"
        )
    elif first is not None:
        where = f" ({first.message})"
    return InvalidDataset(
        f"The dataset has {report.error_total} problem(s){where}",
        extra={
            "errors": issues(report.errors),
            "error_total": report.error_total,
            "error_totals": report.error_totals,
            "example_count": report.example_count,
        },
    )


class DatasetCreation:
    def __init__(self, resources: Resources) -> None:
        self.resources = resources
        self.settings = resources.settings

    def request(self, fields: dict[str, Any]) -> DatasetRequest:
        """An upload's options, with this service's default model."""
        return DatasetRequest.model_validate(
            fields | {"default_model": self.settings.default_model}
        )

    async def run_ingest(
        self,
        options: IngestOptions,
        dest: Path,
        *,
        upload: Upload | None = None,
        examples: list[dict[str, Any]] | None = None,
    ) -> IngestReport:
        """Parse, validate and count in a thread (fanning out to the process pool),
        so the event loop keeps serving other requests."""
        executor = self.resources.executor
        if examples is not None:
            call = functools.partial(ingest_examples, examples, dest, options, executor=executor)
        elif upload is not None:
            call = functools.partial(
                ingest_file,
                upload.path,
                dest,
                options,
                executor=executor,
                source_sha256=upload.sha256,
            )
        else:
            raise ValueError("give an upload or examples")
        return await anyio.to_thread.run_sync(call)

    async def check(
        self,
        form: DatasetRequest,
        *,
        upload: Upload | None = None,
        examples: list[dict[str, Any]] | None = None,
    ) -> IngestReport:
        """The dry run: the verdict and the estimate, nothing stored."""
        spec = await self.resources.providers.spec(form.target_model)
        with self.resources.blobs.scratch_file(".jsonl") as dest:
            return await self.run_ingest(
                ingest_options(form, spec, self.settings), dest, upload=upload, examples=examples
            )

    async def create(
        self,
        tenant: str,
        form: DatasetRequest,
        *,
        upload: Upload | None = None,
        examples: list[dict[str, Any]] | None = None,
        as_file: bool = False,
    ) -> tuple[Dataset, bool]:
        """Store a dataset; returns it and whether it waits for the worker (validating).

        Raises InvalidDataset (every bad line) when the data cannot be used. With
        `as_file` (an upload through /v1/files) OpenAI's rules for files apply: only
        data that is not JSONL of objects is refused; other problems are stored on an
        `invalid` dataset (a job naming it is refused), the example minimum is left to
        the job, and the bytes as uploaded are kept.
        """
        spec = await self.resources.providers.spec(form.target_model)
        if upload is not None and upload.size > self.settings.sync_validation_max_bytes:
            return await self._accept_for_background(tenant, form, upload, as_file=as_file), True
        options = ingest_options(form, spec, self.settings, min_examples=file_minimum(as_file))
        with self.resources.blobs.scratch_file(".jsonl") as dest:
            report = await self.run_ingest(options, dest, upload=upload, examples=examples)
            if not report.ok and (not as_file or unreadable(report)):
                raise refusal(report)
            if not report.ok:
                records = [self._invalid_file(tenant, form, report, upload)]
            else:
                records = await self.build_records(
                    tenant=tenant,
                    form=form,
                    spec=spec,
                    report=report,
                    normalized=dest,
                    filename=upload.filename if upload else None,
                )
            if as_file and upload is not None:
                records[0].origin = "files"
                records[0].source_bytes = upload.size
                await anyio.to_thread.run_sync(
                    self.resources.blobs.keep_source, upload.path, records[0].id
                )
        await self.resources.datasets.create(*records)
        return records[0], False

    def _invalid_file(
        self, tenant: str, form: DatasetRequest, report: IngestReport, upload: Upload | None
    ) -> Dataset:
        dataset_id = new_id("ds")
        now = now_iso()
        return Dataset(
            id=dataset_id,
            tenant=tenant,
            name=form.name or (upload.filename if upload else None) or dataset_id,
            status="invalid",
            model=form.target_model,
            filename=upload.filename if upload else None,
            request=form.model_dump(mode="json"),
            kind=report.kind,
            format=report.format,
            example_count=report.example_count,
            errors=[DatasetIssueRecord(**i) for i in issues(report.errors)],
            error_total=report.error_total,
            sha256=report.source_sha256,
            invalid_reason=f"{report.error_total} problem(s)",
            created_at=now,
            updated_at=now,
        )

    async def _accept_for_background(
        self, tenant: str, form: DatasetRequest, upload: Upload, *, as_file: bool
    ) -> Dataset:
        dataset_id = new_id("ds")
        original = self.resources.blobs.original_path(dataset_id)
        await anyio.to_thread.run_sync(shutil.move, str(upload.path), str(original))
        now = now_iso()
        record = Dataset(
            id=dataset_id,
            tenant=tenant,
            name=form.name or upload.filename or dataset_id,
            status="validating",
            model=form.target_model,
            filename=upload.filename,
            request=form.model_dump(mode="json"),
            bytes=upload.size,
            sha256=upload.sha256,
            origin="files" if as_file else "datasets",
            source_bytes=upload.size if as_file else None,
            created_at=now,
            updated_at=now,
        )
        await self.resources.datasets.create(record)
        # Enqueue only after the record is durable; the reconciler covers a lost enqueue.
        await tasks.enqueue_dataset_validation(self.resources.queue, dataset_id)
        return record

    def _closed_warning(self, model: str) -> list[DatasetIssueRecord]:
        message = self.resources.providers.catalog.closed_warning(model, date.today())
        if message is None:
            return []
        return [
            DatasetIssueRecord(line=None, path="model", code=MODEL_TRAINING_CLOSED, message=message)
        ]

    def _measured(
        self,
        spec: ModelSpec,
        form: DatasetRequest,
        part: IngestReport | PartStats,
    ) -> dict[str, Any]:
        """Statistics and estimate of a whole report or of one part of a split."""
        if isinstance(part, IngestReport):
            stats = part.tokens
            example_count = part.example_count
        else:
            stats = summarize_tokens(
                part.example_tokens,
                assistant_token_count=part.assistant_token_count,
                example_token_limit=spec.example_token_limit,
                encoding=spec.counting.label,
            )
            example_count = part.example_count
        estimate = (
            estimate_training(
                spec=spec,
                example_count=example_count,
                billed_tokens_per_epoch=stats.billed_tokens_per_epoch,
                n_epochs=form.n_epochs,
            )
            if example_count
            else None
        )
        return {
            "example_count": example_count,
            "token_count": stats.token_count,
            "token_stats": asdict(stats),
            "estimate": asdict(estimate) if estimate is not None else None,
        }

    async def build_records(
        self,
        *,
        tenant: str,
        form: DatasetRequest,
        spec: ModelSpec,
        report: IngestReport,
        normalized: Path,
        filename: str | None,
        dataset_id: str | None = None,
    ) -> list[Dataset]:
        """Commit the normalized file(s) to the blob store and return the record(s)."""
        blobs = self.resources.blobs
        dataset_id = dataset_id or new_id("ds")
        now = now_iso()
        base = {
            "tenant": tenant,
            "name": form.name or filename or dataset_id,
            "status": "ready",
            "model": form.target_model,
            "filename": filename,
            "sha256": report.source_sha256,
            "request": form.model_dump(mode="json"),
            "kind": report.kind,
            "format": report.format,
            "warnings": self._closed_warning(form.target_model)
            + [DatasetIssueRecord(**i) for i in issues(report.warnings)],
            "warning_totals": report.warning_totals,
            "created_at": now,
            "updated_at": now,
        }
        if form.validation_fraction is None:
            blobs.commit(normalized, dataset_id)
            return [
                Dataset(
                    **base,
                    **self._measured(spec, form, report),
                    id=dataset_id,
                    bytes=report.normalized_bytes,
                    normalized_sha256=report.normalized_sha256,
                )
            ]
        validation_id = new_id("ds")
        with blobs.scratch_file(".train") as train, blobs.scratch_file(".valid") as valid:
            split = await anyio.to_thread.run_sync(
                functools.partial(
                    split_dataset,
                    normalized,
                    train,
                    valid,
                    validation_fraction=form.validation_fraction,
                    seed=form.seed,
                    spec=spec,
                    report=report,
                )
            )
            minimum = max(spec.min_examples, SPLIT_MIN_TRAINING_EXAMPLES)
            if split.train.example_count < minimum:
                raise InvalidDataset(
                    f"After the split the training part has {split.train.example_count} "
                    f"example(s); fine-tuning needs at least {minimum}. Lower "
                    "validation_fraction or add examples.",
                    extra={
                        "errors": [
                            {
                                "line": None,
                                "path": "validation_fraction",
                                "code": "too_few_examples",
                                "message": f"The training part has {split.train.example_count} "
                                f"example(s), fewer than {minimum}.",
                            }
                        ],
                        "example_count": report.example_count,
                    },
                )
            blobs.commit(train, dataset_id)
            blobs.commit(valid, validation_id)
        training = Dataset(
            **base,
            **self._measured(spec, form, split.train),
            id=dataset_id,
            bytes=split.train.bytes,
            normalized_sha256=split.train.sha256,
            validation_dataset_id=validation_id,
        )
        validation = Dataset(
            **{
                **base,
                "warnings": [],
                "warning_totals": {},
                "name": f"{base['name']} (validation)",
            },
            **self._measured(spec, form, split.validation),
            id=validation_id,
            role="validation",
            bytes=split.validation.bytes,
            normalized_sha256=split.validation.sha256,
            training_dataset_id=dataset_id,
        )
        return [training, validation]
