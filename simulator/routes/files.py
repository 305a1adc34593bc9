"""`/v1/files`: upload, list, retrieve, delete and download files."""

from __future__ import annotations

from typing import Any

from litestar import Response, delete, get, post
from litestar.datastructures import UploadFile
from litestar.params import FromPath

from simulator import training_data
from simulator.api_errors import OpenAIError, invalid_value, missing_parameter
from simulator.routes.injection import Sim
from simulator.routes.parsing import AnyRequest, limit_param, list_body

PURPOSES = ["assistants", "batch", "fine-tune", "vision", "user_data", "evals"]
MAX_FILE_BYTES = 512 * 1024 * 1024


def refuse_bad_fine_tune_file(content: bytes, param: str) -> None:
    """OpenAI refuses a fine-tune file that is not JSONL of objects when it is uploaded."""
    problem = training_data.jsonl_upload_problem(content)
    if problem is not None:
        raise OpenAIError(400, problem, param=param)


@post("/files", status_code=200, operation_id="createFile")
async def create_file(request: AnyRequest, sim: Sim) -> dict[str, Any]:
    form = await request.form()
    purpose = form.get("purpose")
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise missing_parameter("file")
    try:
        # Litestar spools the part to a temporary file; a form read by hand is ours to close.
        content = await upload.read()
    finally:
        await upload.close()
    if purpose is None:
        raise missing_parameter("purpose")
    if purpose not in PURPOSES:
        raise invalid_value("purpose", purpose, PURPOSES)
    if len(content) > MAX_FILE_BYTES:
        raise OpenAIError(
            413, "File is too large. Files can be up to 512 MB; use the Uploads API for more."
        )
    if purpose == "fine-tune":
        refuse_bad_fine_tune_file(content, "file")
    return sim.add_file(upload.filename or "file", str(purpose), content).to_dict()


@get("/files", operation_id="listFiles")
async def list_files(request: AnyRequest, sim: Sim) -> dict[str, Any]:
    purpose = request.query_params.get("purpose")
    order = request.query_params.get("order", "desc")
    if order not in ("asc", "desc"):
        raise invalid_value("order", order, ["asc", "desc"])
    files = sim.files_newest_first(purpose)
    if order == "asc":
        files.reverse()
    after = request.query_params.get("after")
    start = 0
    if after is not None:
        start = next((i + 1 for i, item in enumerate(files) if item.id == after), 0)
    limit = limit_param(request, 10_000, 10_000)
    page = files[start : start + limit]
    return list_body(
        [item.to_dict() for item in page],
        start + limit < len(files),
        first_id=page[0].id if page else None,
        last_id=page[-1].id if page else None,
    )


@get("/files/{file_id:str}", operation_id="retrieveFile")
async def retrieve_file(file_id: FromPath[str], sim: Sim) -> dict[str, Any]:
    return sim.file(file_id).to_dict()


@delete("/files/{file_id:str}", status_code=200, operation_id="deleteFile")
async def delete_file(file_id: FromPath[str], sim: Sim) -> dict[str, Any]:
    sim.delete_file(file_id)
    return {"id": file_id, "object": "file", "deleted": True}


@get("/files/{file_id:str}/content", operation_id="downloadFile")
async def download_file(file_id: FromPath[str], sim: Sim) -> Response[bytes]:
    stored = sim.file(file_id)
    return Response(stored.content, media_type="application/octet-stream")


handlers = [create_file, list_files, retrieve_file, delete_file, download_file]
