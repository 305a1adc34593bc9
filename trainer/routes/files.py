"""`/v1/files`: upload, list, retrieve, delete and download files.

Uploads are streamed to disk. A fine-tune upload that is not JSONL of objects is
refused at once, as OpenAI refuses it; everything else about its content is
checked when a job validates it. Results files (`fine-tune-results`) are made by
the trainer; their content is a CSV served base64-encoded, as OpenAI serves it.
"""

from __future__ import annotations

import contextlib
from typing import Any

from litestar import delete, get, post
from litestar.datastructures import UploadFile
from litestar.params import FromPath
from litestar.response import File

from trainer import training_data
from trainer.errors import APIError, invalid_value, missing_parameter, no_such_file
from trainer.routes.parsing import AnyRequest, Trainer, limit_param, list_body, page_after

# Only fine-tuning files can be uploaded here; results files are the trainer's own.
UPLOAD_PURPOSES = ["fine-tune"]
CHUNK = 1024 * 1024


@post("/files", status_code=200, operation_id="CreateFile")
async def create_file(request: AnyRequest, trainer: Trainer) -> dict[str, Any]:
    form = await request.form()
    purpose = form.get("purpose")
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise missing_parameter("file")
    staged = trainer.files.staging_path()
    try:
        if purpose is None:
            raise missing_parameter("purpose")
        if purpose not in UPLOAD_PURPOSES:
            raise invalid_value("purpose", purpose, UPLOAD_PURPOSES)
        size = 0
        with staged.open("wb") as handle:
            while chunk := await upload.read(CHUNK):
                size += len(chunk)
                if size > trainer.config.max_upload_bytes:
                    raise APIError(
                        413,
                        f"File is too large. Files can be up to "
                        f"{trainer.config.max_upload_bytes // (1024 * 1024)} MB.",
                        param="file",
                    )
                handle.write(chunk)
        with staged.open("rb") as handle:
            problem = training_data.upload_problem(iter(handle))
        if problem is not None:
            raise APIError(400, problem, param="file")
        stored = trainer.files.adopt(staged, upload.filename or "file.jsonl", str(purpose))
    finally:
        # Litestar spools the part to a temporary file; a form read by hand is ours to close.
        await upload.close()
        with contextlib.suppress(FileNotFoundError):
            staged.unlink()
        await upload.close()
    return stored.view()


@get("/files", operation_id="ListFiles")
async def list_files(request: AnyRequest, trainer: Trainer) -> dict[str, Any]:
    purpose = request.query_params.get("purpose")
    order = request.query_params.get("order", "desc")
    if order not in ("asc", "desc"):
        raise invalid_value("order", order, ["asc", "desc"])
    files = trainer.files.newest_first(purpose)
    if order == "asc":
        files.reverse()
    page, has_more = page_after(
        files,
        request.query_params.get("after"),
        limit_param(request, 10_000, 10_000),
        key=lambda item: item.id,
    )
    return list_body(
        [item.view() for item in page],
        has_more,
        first_id=page[0].id if page else None,
        last_id=page[-1].id if page else None,
    )


@get("/files/{file_id:str}", operation_id="RetrieveFile")
async def retrieve_file(file_id: FromPath[str], trainer: Trainer) -> dict[str, Any]:
    stored = trainer.files.get(file_id)
    if stored is None:
        raise no_such_file(file_id)
    return stored.view()


@delete("/files/{file_id:str}", status_code=200, operation_id="DeleteFile")
async def delete_file(file_id: FromPath[str], trainer: Trainer) -> dict[str, Any]:
    if not trainer.files.delete(file_id):
        raise no_such_file(file_id)
    return {"id": file_id, "object": "file", "deleted": True}


@get("/files/{file_id:str}/content", operation_id="DownloadFile")
async def download_file(file_id: FromPath[str], trainer: Trainer) -> File:
    stored = trainer.files.get(file_id)
    if stored is None:
        raise no_such_file(file_id)
    return File(
        path=trainer.files.content_path(file_id),
        filename=stored.filename,
        media_type="application/octet-stream",
        content_disposition_type="inline",
    )


handlers = [create_file, list_files, retrieve_file, delete_file, download_file]
