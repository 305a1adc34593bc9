"""`/datasets`: upload, convert, validate every line, count tokens and price.

The controller reads the body (multipart streamed to a scratch file, or JSON
examples) and hands it to `service.datasets.creation`: small uploads answer
201 with statistics, or 422 naming every bad line with nothing stored; uploads
above SYNC_VALIDATION_MAX_BYTES answer 202 with a dataset in `validating`,
which the worker ends `ready` or `invalid`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from litestar import Controller, Request, Response, delete, get, post
from litestar.params import FromPath, FromQuery, QueryParameter
from litestar.response import Stream
from litestar.status_codes import HTTP_201_CREATED, HTTP_202_ACCEPTED, HTTP_204_NO_CONTENT
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from service.api.auth import Injected, Tenant
from service.api.idempotency import Outcome, fingerprint, run_once
from service.api.links import location
from service.api.openapi_docs import DatasetUploadOperation
from service.api.pagination import MAX_LIMIT, ListResponse
from service.api.problems import problems
from service.api.uploads import receive_upload, upload_slot
from service.datasets.creation import DatasetCreation, DatasetRequest, Upload
from service.datasets.ingest import IngestReport
from service.datasets.removal import delete_dataset
from service.domain.records import Dataset as DatasetRecord
from service.errors import Conflict, MalformedRequest, TooLarge


class DatasetIssue(BaseModel):
    line: int | None
    path: str | None
    code: str
    message: str


class TokenStatsView(BaseModel):
    model_config = ConfigDict(extra="allow")

    encoding: str
    token_count: int
    min: int
    max: int
    mean: float
    p50: int
    p90: int
    assistant_token_count: int
    examples_over_limit: int
    example_token_limit: int


class EstimateView(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str
    n_epochs: int
    batch_size: int
    steps: int
    billed_tokens: int
    cost_usd: float | None
    currency: str
    price_table_as_of: str


class DatasetProgress(BaseModel):
    """How far the worker has read a dataset it validates in the background."""

    bytes_done: int
    bytes_total: int
    examples_done: int
    percent: float
    estimated_finish: str | None = Field(
        description="When validation should end at the pace so far (ISO 8601)"
    )


class Dataset(BaseModel):
    id: str
    object: Literal["dataset"] = "dataset"
    name: str
    status: Literal["ready", "validating", "invalid"]
    kind: str | None
    format: str | None
    model: str
    filename: str | None
    example_count: int | None
    token_count: int | None
    token_stats: TokenStatsView | None
    estimate: EstimateView | None
    warnings: list[DatasetIssue]
    warning_totals: dict[str, int]
    errors: list[DatasetIssue]
    error_total: int
    sha256: str | None
    bytes: int | None
    role: Literal["training", "validation"]
    validation_dataset_id: str | None
    training_dataset_id: str | None
    progress: DatasetProgress | None = Field(
        description="While status is validating: bytes and examples done, and an estimated end"
    )
    created_at: str


class DatasetJson(BaseModel):
    """Examples built in code: each item a chat or preference example, a
    prompt/completion pair, or a {user, assistant} object."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, max_length=200)
    examples: list[dict[str, Any]] = Field(min_length=1)
    model: str | None = None
    system_prompt: str | None = Field(default=None, max_length=20_000)
    validation_fraction: float | None = Field(default=None, gt=0, lt=1)
    seed: int = 0


class DatasetReport(BaseModel):
    """A dry run: the verdict and estimate, nothing stored."""

    ok: bool
    kind: str | None
    format: str | None
    model: str
    example_count: int
    token_count: int
    token_stats: TokenStatsView
    estimate: EstimateView | None
    warnings: list[DatasetIssue]
    warning_totals: dict[str, int]
    errors: list[DatasetIssue]
    error_total: int


def public_dataset(record: DatasetRecord) -> Dataset:
    return Dataset(
        id=record.id,
        name=record.name,
        status=record.status,
        kind=record.kind,
        format=record.format,
        model=record.model,
        filename=record.filename,
        example_count=record.example_count,
        token_count=record.token_count,
        token_stats=record.token_stats,
        estimate=record.estimate,
        warnings=[DatasetIssue(**w.model_dump()) for w in record.warnings],
        warning_totals=record.warning_totals,
        errors=[DatasetIssue(**e.model_dump()) for e in record.errors],
        error_total=record.error_total,
        sha256=record.sha256,
        bytes=record.bytes,
        role=record.role,
        validation_dataset_id=record.validation_dataset_id,
        training_dataset_id=record.training_dataset_id,
        progress=(
            DatasetProgress(**record.progress.model_dump())
            if record.progress and record.status == "validating"
            else None
        ),
        created_at=record.created_at,
    )


def report_view(report: IngestReport) -> DatasetReport:
    data = report.to_dict()
    return DatasetReport(
        ok=report.ok,
        kind=data["kind"],
        format=data["format"],
        model=data["model"],
        example_count=data["example_count"],
        token_count=report.token_count,
        token_stats=data["tokens"],
        estimate=data["estimate"],
        warnings=data["warnings"],
        warning_totals=data["warning_totals"],
        errors=data["errors"],
        error_total=data["error_total"],
    )


def _invalid_field(exc: ValidationError, code: str) -> MalformedRequest:
    first = exc.errors()[0]
    field_name = ".".join(str(p) for p in first["loc"])
    return MalformedRequest(
        f"{field_name}: {first['msg']}",
        code=code,
        extra={
            "errors": [
                {"line": None, "path": field_name, "code": "invalid", "message": first["msg"]}
            ]
        },
    )


@dataclass(slots=True)
class _Body:
    form: DatasetRequest
    upload: Upload | None
    examples: list[dict[str, Any]] | None
    fingerprint: str


class DatasetController(Controller):
    path = "/datasets"
    tags = ["Datasets"]

    async def _read_body(
        self, request: Request[Any, Any, Any], creation: DatasetCreation, scratch: Path
    ) -> _Body:
        settings = creation.settings
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("application/json"):
            raw = bytearray()
            async for chunk in request.stream():
                raw += chunk
                if len(raw) > settings.sync_validation_max_bytes:
                    raise TooLarge(
                        "JSON datasets are limited to "
                        f"{settings.sync_validation_max_bytes} bytes; upload a file instead"
                    )
            try:
                body = DatasetJson.model_validate_json(bytes(raw))
            except ValidationError as exc:
                raise _invalid_field(exc, "invalid_body") from None
            form = creation.request(
                body.model_dump(exclude={"examples"}, exclude_none=True) | {"format": "json"}
            )
            return _Body(form, None, body.examples, fingerprint(bytes(raw)))
        upload = await receive_upload(
            request.stream(), content_type, scratch, max_bytes=settings.max_upload_bytes
        )
        try:
            form = creation.request({k: v for k, v in upload.fields.items() if v != ""})
        except ValidationError as exc:
            raise _invalid_field(exc, "invalid_field") from None
        return _Body(
            form,
            Upload(
                path=scratch,
                filename=upload.filename,
                size=upload.file_bytes,
                sha256=upload.sha256,
            ),
            None,
            fingerprint(
                upload.sha256, json.dumps(upload.fields, sort_keys=True), upload.filename or ""
            ),
        )

    async def _receive(
        self,
        request: Request[Any, Any, Any],
        resources: Injected,
        tenant: Tenant,
        *,
        dry_run: bool,
    ) -> Response[Any]:
        creation = DatasetCreation(resources)
        async with upload_slot(resources, tenant):
            with resources.blobs.scratch_file(".upload") as scratch:
                body = await self._read_body(request, creation, scratch)
                if dry_run:
                    report = await creation.check(
                        body.form, upload=body.upload, examples=body.examples
                    )
                    return Response(report_view(report), status_code=200)

                async def produce() -> Outcome:
                    record, waiting = await creation.create(
                        tenant, body.form, upload=body.upload, examples=body.examples
                    )
                    return Outcome(
                        HTTP_202_ACCEPTED if waiting else HTTP_201_CREATED,
                        public_dataset(record).model_dump(mode="json"),
                        {"Location": location(request, f"/datasets/{record.id}")},
                    )

                return await run_once(request, resources, tenant, body.fingerprint, produce)

    @post(
        "/",
        operation_id="CreateDataset",
        summary="Upload a dataset (multipart `file` or JSON examples), validated before storing",
        status_code=HTTP_201_CREATED,
        request_max_body_size=None,
        operation_class=DatasetUploadOperation,
        responses=problems(400, 401, 408, 413, 415, 422, 429),
    )
    async def create_dataset(
        self, request: Request[Any, Any, Any], resources: Injected, tenant: Tenant
    ) -> Response[Dataset]:
        return await self._receive(request, resources, tenant, dry_run=False)

    @post(
        "/validate",
        operation_id="ValidateDataset",
        summary="Dry run: the same validation and estimate, nothing stored",
        status_code=200,
        request_max_body_size=None,
        operation_class=DatasetUploadOperation,
        responses=problems(400, 401, 408, 413, 415, 422, 429),
    )
    async def validate_dataset(
        self, request: Request[Any, Any, Any], resources: Injected, tenant: Tenant
    ) -> Response[DatasetReport]:
        return await self._receive(request, resources, tenant, dry_run=True)

    @get(
        "/",
        operation_id="ListDatasets",
        summary="List datasets, newest first",
        responses=problems(400, 401, 429),
    )
    async def list_datasets(
        self,
        resources: Injected,
        tenant: Tenant,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT)] = 20,
        after: FromQuery[str | None] = None,
    ) -> ListResponse[Dataset]:
        store = resources.datasets
        page = await store.page(tenant, limit=limit, after=after)
        found = await store.many(page.ids)
        return ListResponse(data=[public_dataset(r) for r in found], has_more=page.has_more)

    @get(
        "/{dataset_id:str}",
        operation_id="GetDataset",
        summary="One dataset",
        responses=problems(400, 401, 404, 429),
    )
    async def get_dataset(
        self, resources: Injected, tenant: Tenant, dataset_id: FromPath[str]
    ) -> Dataset:
        return public_dataset(await resources.datasets.get_for_tenant(tenant, dataset_id))

    @get(
        "/{dataset_id:str}/content",
        operation_id="GetDatasetContent",
        summary="The normalized chat JSONL, streamed",
        media_type="application/jsonl",
        responses=problems(400, 401, 404, 409, 429),
    )
    async def get_content(
        self, resources: Injected, tenant: Tenant, dataset_id: FromPath[str]
    ) -> Stream:
        record = await resources.datasets.get_for_tenant(tenant, dataset_id)
        if record.status != "ready":
            raise Conflict(f"Dataset {dataset_id} is {record.status}; it has no normalized content")
        return Stream(
            resources.blobs.stream(dataset_id),
            media_type="application/jsonl",
            headers={"Content-Disposition": f'attachment; filename="{dataset_id}.jsonl"'},
        )

    @delete(
        "/{dataset_id:str}",
        operation_id="DeleteDataset",
        summary="Delete a dataset (refused while a job that uses it is still going)",
        status_code=HTTP_204_NO_CONTENT,
        responses=problems(400, 401, 404, 409, 429),
    )
    async def delete_dataset(
        self, resources: Injected, tenant: Tenant, dataset_id: FromPath[str]
    ) -> None:
        await delete_dataset(resources, tenant, dataset_id)
