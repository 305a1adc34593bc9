"""`/v1/files`: a file uploaded with purpose `fine-tune` is a dataset.

The upload goes through `DatasetCreation` with OpenAI's rules for files
(`as_file`): only JSONL, every line a JSON object, or the upload is refused
at once (as OpenAI does); content problems (a line without an assistant
message, fewer examples than a model needs) are kept on the dataset and
refused when a job names the file. The bytes as uploaded are kept, so
`content` returns exactly what was sent.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import anyio
from litestar import Controller, Request, Response, delete, get, post
from litestar.params import FromPath, FromQuery, QueryParameter
from litestar.response import Stream

from service.api.auth import Injected, Tenant
from service.api.idempotency import Outcome, fingerprint, run_once
from service.api.openapi_docs import FileUploadOperation
from service.api.uploads import receive_upload, upload_slot
from service.datasets.creation import UNREADABLE, DatasetCreation, InvalidDataset, Upload
from service.datasets.removal import delete_dataset
from service.domain.records import Dataset
from service.errors import NotFound
from service.facade.errors import OpenAIError, not_found, openai_errors
from service.facade.shapes import file_object
from service.resources import Resources

PURPOSE = "fine-tune"
MAX_LIST = 10_000


def _not_jsonl(exc: InvalidDataset) -> OpenAIError:
    errors = exc.extra.get("errors") or [{}]
    first = next((e for e in errors if e.get("code") in UNREADABLE), errors[0])
    line = first.get("line")
    where = f"Line {line} is not a dictionary." if line else str(first.get("message", ""))
    return OpenAIError(
        400,
        "Expected file to have JSONL format, where every line is a valid JSON dictionary. " + where,
        param="file",
    )


async def _file(resources: Resources, tenant: str, file_id: str) -> Dataset:
    try:
        return await resources.datasets.get_for_tenant(tenant, file_id)
    except NotFound:
        raise not_found("File object", file_id, "id") from None


class FilesController(Controller):
    path = "/files"

    @post(
        "/",
        operation_id="OpenAICreateFile",
        status_code=200,
        request_max_body_size=None,
        operation_class=FileUploadOperation,
        responses=openai_errors(413),
    )
    async def create(
        self, request: Request[Any, Any, Any], resources: Injected, tenant: Tenant
    ) -> Response[dict[str, Any]]:
        """Upload a JSONL training file (multipart `file`, `purpose=fine-tune`)."""
        settings = resources.settings
        creation = DatasetCreation(resources)
        async with upload_slot(resources, tenant):
            with resources.blobs.scratch_file(".upload") as scratch:
                upload = await receive_upload(
                    request.stream(),
                    request.headers.get("content-type", ""),
                    scratch,
                    max_bytes=settings.max_upload_bytes,
                )
                purpose = upload.fields.get("purpose")
                if not purpose:
                    raise OpenAIError(
                        400,
                        "Missing required parameter: 'purpose'.",
                        param="purpose",
                        code="missing_required_parameter",
                    )
                if purpose != PURPOSE:
                    raise OpenAIError(
                        400,
                        f"Invalid value: '{purpose}'. This service keeps files for fine-tuning "
                        "only; the supported value is 'fine-tune'.",
                        param="purpose",
                        code="invalid_value",
                    )
                form = creation.request({"format": "jsonl"})
                received = Upload(
                    path=scratch,
                    filename=upload.filename,
                    size=upload.file_bytes,
                    sha256=upload.sha256,
                )

                async def produce() -> Outcome:
                    try:
                        record, _ = await creation.create(
                            tenant, form, upload=received, as_file=True
                        )
                    except InvalidDataset as exc:
                        raise _not_jsonl(exc) from None
                    return Outcome(200, file_object(record), {})

                return await run_once(
                    request,
                    resources,
                    tenant,
                    fingerprint(upload.sha256, upload.filename or "", purpose),
                    produce,
                )

    @get("/", operation_id="OpenAIListFiles", responses=openai_errors())
    async def list_files(
        self,
        resources: Injected,
        tenant: Tenant,
        purpose: FromQuery[str | None] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_LIST)] = MAX_LIST,
        after: FromQuery[str | None] = None,
        order: FromQuery[Literal["asc", "desc"]] = "desc",
    ) -> dict[str, Any]:
        """The tenant's files (its datasets), newest first unless `order=asc`."""
        if purpose is not None and purpose != PURPOSE:
            data: list[dict[str, Any]] = []
            has_more = False
        else:
            page = await resources.datasets.page(
                tenant, limit=limit, after=after, oldest_first=order == "asc"
            )
            data = [file_object(d) for d in await resources.datasets.many(page.ids)]
            has_more = page.has_more
        return {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": has_more,
        }

    @get("/{file_id:str}", operation_id="OpenAIRetrieveFile", responses=openai_errors())
    async def retrieve(
        self, resources: Injected, tenant: Tenant, file_id: FromPath[str]
    ) -> dict[str, Any]:
        return file_object(await _file(resources, tenant, file_id))

    @delete(
        "/{file_id:str}",
        operation_id="OpenAIDeleteFile",
        status_code=200,
        responses=openai_errors(),
    )
    async def remove(
        self, resources: Injected, tenant: Tenant, file_id: FromPath[str]
    ) -> dict[str, Any]:
        """Delete a file (refused while an unfinished job trains on it)."""
        await _file(resources, tenant, file_id)
        await delete_dataset(resources, tenant, file_id)
        return {"id": file_id, "object": "file", "deleted": True}

    @get(
        "/{file_id:str}/content",
        operation_id="OpenAIRetrieveFileContent",
        media_type="application/octet-stream",
        responses=openai_errors(),
    )
    async def content(self, resources: Injected, tenant: Tenant, file_id: FromPath[str]) -> Stream:
        """The bytes as uploaded (for a dataset made by /datasets: its normalized JSONL)."""
        record = await _file(resources, tenant, file_id)
        blobs = resources.blobs
        if await anyio.to_thread.run_sync(blobs.has_source, file_id):
            chunks = blobs.stream_source(file_id)
        elif record.status == "ready":
            chunks = blobs.stream(file_id)
        else:
            raise OpenAIError(
                400, f"File {file_id} is {record.status} and has no content yet", param="id"
            )
        return Stream(chunks, media_type="application/octet-stream")
