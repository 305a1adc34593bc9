"""`/datasets`: upload, convert, validate every line, count tokens and price.

Small uploads are validated inside the request (in the app's process pool):
the caller gets 201 with statistics, or 422 naming every bad line, and
nothing is stored for a refused file. Uploads above SYNC_VALIDATION_MAX_BYTES
answer 202 at once with a dataset in `validating`; the worker validates it
and the dataset becomes `ready` or `invalid` (with the same error list), so
no request is held for minutes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio.to_thread
from litestar import Controller, Request, Response, delete, get, post
from litestar.datastructures import State
from litestar.params import FromPath, FromQuery, QueryParameter
from litestar.response import Stream
from litestar.status_codes import HTTP_201_CREATED, HTTP_202_ACCEPTED, HTTP_204_NO_CONTENT
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from service import tasks
from service.api.auth import Tenant
from service.api.links import location
from service.api.openapi_docs import DatasetUploadOperation
from service.api.pagination import MAX_LIMIT, ListResponse
from service.api.problems import problems
from service.api.uploads import receive_upload
from service.datasets import (
    DatasetRequest,
    build_records,
    dataset_view,
    ingest_options,
    refuse_report,
    run_ingest,
)
from service.domain.jobs import is_terminal
from service.errors import Conflict, MalformedRequest, NotFound, RateLimited, TooLarge
from service.idempotency import Outcome, fingerprint, run_once
from service.resources import Resources
from service.store.datasets import DatasetStore
from service.store.jobs import JobStore
from service.store.records import new_id, now_iso
from service.store.slots import Slots

# An upload's slot outlives its body deadline by this much (conversion, then storing).
UPLOAD_SLOT_SPARE_SECONDS = 300.0


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


def _public(record: dict[str, Any]) -> Dataset:
    return Dataset(**dataset_view(record))


def _form_request(fields: dict[str, str], resources: Resources) -> DatasetRequest:
    try:
        return DatasetRequest.model_validate(
            {key: value for key, value in fields.items() if value != ""}
            | {"default_model": resources.settings.default_model}
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        field_name = ".".join(str(p) for p in first["loc"])
        raise MalformedRequest(
            f"{field_name}: {first['msg']}",
            code="invalid_field",
            extra={
                "errors": [
                    {"line": None, "path": field_name, "code": "invalid", "message": first["msg"]}
                ]
            },
        ) from None


class DatasetController(Controller):
    path = "/datasets"
    tags = ["Datasets"]

    async def _receive(
        self,
        request: Request[Any, Any, Any],
        resources: Resources,
        tenant: Tenant,
        *,
        dry_run: bool,
    ) -> Response[Any]:
        settings = resources.settings
        slots = Slots(
            resources.redis,
            resources.keys.upload_slots(tenant),
            limit=settings.upload_concurrency_per_tenant,
            ttl=settings.upload_timeout_seconds + UPLOAD_SLOT_SPARE_SECONDS,
        )
        holder = new_id("upl")
        if not await slots.take(holder):
            raise RateLimited(
                f"This tenant already has {settings.upload_concurrency_per_tenant} uploads in "
                "progress; wait for one to finish",
                code="too_many_uploads",
                retry_after=5,
            )
        try:
            return await self._receive_within_slot(request, resources, tenant, dry_run=dry_run)
        finally:
            await slots.release(holder)

    async def _receive_within_slot(
        self,
        request: Request[Any, Any, Any],
        resources: Resources,
        tenant: Tenant,
        *,
        dry_run: bool,
    ) -> Response[Any]:
        settings = resources.settings
        content_type = request.headers.get("content-type", "")
        with (
            resources.blobs.scratch_file(".upload") as source,
            resources.blobs.scratch_file(".jsonl") as dest,
        ):
            examples: list[dict[str, Any]] | None = None
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
                    first = exc.errors()[0]
                    where = ".".join(str(p) for p in first["loc"])
                    raise MalformedRequest(
                        f"{where}: {first['msg']}", code="invalid_body"
                    ) from None
                form = DatasetRequest(
                    name=body.name,
                    model=body.model,
                    system_prompt=body.system_prompt,
                    validation_fraction=body.validation_fraction,
                    seed=body.seed,
                    default_model=settings.default_model,
                    format="json",
                )
                examples = body.examples
                filename = None
                size = len(raw)
                body_fingerprint = fingerprint(bytes(raw))
            else:
                upload = await receive_upload(
                    request.stream(), content_type, source, max_bytes=settings.max_upload_bytes
                )
                form = _form_request(upload.fields, resources)
                filename = upload.filename
                size = upload.file_bytes
                body_fingerprint = fingerprint(
                    upload.sha256, json.dumps(upload.fields, sort_keys=True), filename or ""
                )
            options = ingest_options(form, settings)
            if dry_run:
                report = await run_ingest(resources, source, dest, options, examples=examples)
                return Response(DatasetReport(**report_view(report)), status_code=200)

            async def produce() -> Outcome:
                if examples is None and size > settings.sync_validation_max_bytes:
                    return await self._accept_for_background(
                        request, resources, tenant, form, source, filename
                    )
                report = await run_ingest(resources, source, dest, options, examples=examples)
                if not report.ok:
                    raise refuse_report(report)
                records = await build_records(
                    resources,
                    tenant=tenant,
                    form=form,
                    report=report,
                    normalized=dest,
                    filename=filename,
                )
                await DatasetStore(resources.redis, resources.keys).create(*records)
                return Outcome(
                    HTTP_201_CREATED,
                    _public(records[0]).model_dump(mode="json"),
                    {"Location": location(request, f"/datasets/{records[0]['id']}")},
                )

            return await run_once(request, resources, tenant, body_fingerprint, produce)

    async def _accept_for_background(
        self,
        request: Request[Any, Any, Any],
        resources: Resources,
        tenant: Tenant,
        form: DatasetRequest,
        source: Path,
        filename: str | None,
    ) -> Outcome:
        dataset_id = new_id("ds")
        original = resources.blobs.original_path(dataset_id)
        await anyio.to_thread.run_sync(shutil.move, str(source), str(original))
        record = {
            "id": dataset_id,
            "object": "dataset",
            "tenant": tenant,
            "name": form.name or filename or dataset_id,
            "status": "validating",
            "model": form.target_model,
            "filename": filename,
            "request": form.model_dump(mode="json"),
            "role": "training",
            "created_at": now_iso(),
        }
        await DatasetStore(resources.redis, resources.keys).create(record)
        await tasks.enqueue_dataset_validation(resources.queue, dataset_id)
        return Outcome(
            HTTP_202_ACCEPTED,
            _public(record).model_dump(mode="json"),
            {"Location": location(request, f"/datasets/{dataset_id}")},
        )

    @post(
        "/",
        operation_id="CreateDataset",
        summary="Upload a dataset (multipart `file` or JSON examples), validated before storing",
        status_code=HTTP_201_CREATED,
        request_max_body_size=None,
        operation_class=DatasetUploadOperation,
        responses=problems(400, 401, 413, 415, 422, 429),
    )
    async def create_dataset(
        self, request: Request[Any, Any, Any], state: State, tenant: Tenant
    ) -> Response[Dataset]:
        return await self._receive(request, state.resources, tenant, dry_run=False)

    @post(
        "/validate",
        operation_id="ValidateDataset",
        summary="Dry run: the same validation and estimate, nothing stored",
        status_code=200,
        request_max_body_size=None,
        operation_class=DatasetUploadOperation,
        responses=problems(400, 401, 413, 415, 422, 429),
    )
    async def validate_dataset(
        self, request: Request[Any, Any, Any], state: State, tenant: Tenant
    ) -> Response[DatasetReport]:
        return await self._receive(request, state.resources, tenant, dry_run=True)

    @get(
        "/",
        operation_id="ListDatasets",
        summary="List datasets, newest first",
        responses=problems(400, 401, 429),
    )
    async def list_datasets(
        self,
        state: State,
        tenant: Tenant,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT)] = 20,
        after: FromQuery[str | None] = None,
    ) -> ListResponse[Dataset]:
        resources: Resources = state.resources
        store = DatasetStore(resources.redis, resources.keys)
        page = await store.page(tenant, limit=limit, after=after)
        return ListResponse(
            data=[_public(r) for r in await store.many(page.ids)], has_more=page.has_more
        )

    @get(
        "/{dataset_id:str}",
        operation_id="GetDataset",
        summary="One dataset",
        responses=problems(400, 401, 404, 429),
    )
    async def get_dataset(self, state: State, tenant: Tenant, dataset_id: FromPath[str]) -> Dataset:
        resources: Resources = state.resources
        return _public(
            await DatasetStore(resources.redis, resources.keys).get_for_tenant(tenant, dataset_id)
        )

    @get(
        "/{dataset_id:str}/content",
        operation_id="GetDatasetContent",
        summary="The normalized chat JSONL, streamed",
        media_type="application/jsonl",
        responses=problems(400, 401, 404, 409, 429),
    )
    async def get_content(self, state: State, tenant: Tenant, dataset_id: FromPath[str]) -> Stream:
        resources: Resources = state.resources
        record = await DatasetStore(resources.redis, resources.keys).get_for_tenant(
            tenant, dataset_id
        )
        if record["status"] != "ready":
            raise Conflict(
                f"Dataset {dataset_id} is {record['status']}; it has no normalized content"
            )
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
    async def delete_dataset(self, state: State, tenant: Tenant, dataset_id: FromPath[str]) -> None:
        resources: Resources = state.resources
        store = DatasetStore(resources.redis, resources.keys)
        await store.get_for_tenant(tenant, dataset_id)
        users = await JobStore(resources.redis, resources.keys).uses_of_dataset(dataset_id)
        busy = [job["id"] for job in users if not is_terminal(job["status"])]
        if busy:
            raise Conflict(
                f"Dataset {dataset_id} is used by unfinished jobs: {', '.join(busy)}",
                code="dataset_in_use",
                extra={"job_ids": busy},
            )

        def owned(record: dict[str, Any]) -> None:
            if record.get("tenant") != tenant:
                raise NotFound(f"No dataset {dataset_id} for this tenant")

        # The tombstone stops a worker still validating it from writing it back;
        # files it commits after this point are removed by that worker.
        await store.delete(dataset_id, owned)
        await anyio.to_thread.run_sync(resources.blobs.delete_all, dataset_id)


def report_view(report: Any) -> dict[str, Any]:
    data = report.to_dict()
    return {
        "ok": report.ok,
        "kind": data["kind"],
        "format": data["format"],
        "model": data["model"],
        "example_count": data["example_count"],
        "token_count": report.token_count,
        "token_stats": data["tokens"],
        "estimate": data["estimate"],
        "warnings": data["warnings"],
        "warning_totals": data["warning_totals"],
        "errors": data["errors"],
        "error_total": data["error_total"],
    }
