"""`/v1/uploads`: large files sent in parts, then assembled into one file."""

from __future__ import annotations

import hashlib
import time
from typing import Any

from litestar import post
from litestar.datastructures import UploadFile
from litestar.params import FromPath

from simulator import identifiers
from simulator.api_errors import (
    OpenAIError,
    integer_out_of_range,
    invalid_type,
    invalid_value,
    missing_parameter,
)
from simulator.routes.files import refuse_bad_fine_tune_file
from simulator.routes.injection import Sim
from simulator.routes.parsing import AnyRequest, json_object
from simulator.state import UPLOAD_LIFETIME_SECONDS, SimulatorState, Upload, UploadPart

PURPOSES = ["assistants", "batch", "fine-tune", "vision"]
FINE_TUNE_MIME_TYPES = ["text/jsonl", "application/jsonl", "application/x-ndjson"]
MAX_UPLOAD_BYTES = 8 * 1024**3
MAX_PART_BYTES = 64 * 1024**2


def _pending(sim: SimulatorState, upload_id: str) -> Upload:
    upload = sim.upload(upload_id)
    if upload.status == "pending" and time.time() > upload.created_at + UPLOAD_LIFETIME_SECONDS:
        sim.end_upload(upload, "expired")
    if upload.status != "pending":
        raise OpenAIError(
            400, f"Upload {upload_id} is {upload.status} and can no longer be changed."
        )
    return upload


@post("/uploads", status_code=200, operation_id="createUpload")
async def create_upload(request: AnyRequest, sim: Sim) -> dict[str, Any]:
    body = await json_object(request)
    for field in ("filename", "purpose", "bytes", "mime_type"):
        if body.get(field) is None:
            raise missing_parameter(field)
    filename, purpose, size, mime_type = (
        body["filename"],
        body["purpose"],
        body["bytes"],
        body["mime_type"],
    )
    if not isinstance(filename, str):
        raise invalid_type("filename", "a string", filename)
    if purpose not in PURPOSES:
        raise invalid_value("purpose", purpose, PURPOSES)
    if not isinstance(size, int) or isinstance(size, bool):
        raise invalid_type("bytes", "an integer", size)
    if not 0 <= size <= MAX_UPLOAD_BYTES:
        raise integer_out_of_range("bytes", size, 0, MAX_UPLOAD_BYTES)
    if purpose == "fine-tune" and mime_type not in FINE_TUNE_MIME_TYPES:
        raise OpenAIError(
            400,
            f"Invalid mime type {mime_type!r} for purpose 'fine-tune'. Supported mime types: "
            + ", ".join(repr(item) for item in FINE_TUNE_MIME_TYPES)
            + ".",
            param="mime_type",
        )
    upload = Upload(
        id=identifiers.upload_id(),
        filename=filename,
        purpose=purpose,
        declared_bytes=size,
        mime_type=str(mime_type),
        created_at=int(time.time()),
    )
    sim.add_upload(upload)
    return upload.to_dict()


@post("/uploads/{upload_id:str}/parts", status_code=200, operation_id="addUploadPart")
async def add_part(upload_id: FromPath[str], request: AnyRequest, sim: Sim) -> dict[str, Any]:
    upload = _pending(sim, upload_id)
    form = await request.form()
    data = form.get("data")
    if not isinstance(data, UploadFile):
        raise missing_parameter("data")
    try:
        content = await data.read()
    finally:
        await data.close()
    if len(content) > MAX_PART_BYTES:
        raise OpenAIError(400, "Each part can be at most 64 MB.", param="data")
    part = UploadPart(identifiers.upload_part_id(), int(time.time()), content)
    sim.add_upload_part(upload, part)
    return {
        "object": "upload.part",
        "id": part.id,
        "created_at": part.created_at,
        "upload_id": upload.id,
    }


@post("/uploads/{upload_id:str}/complete", status_code=200, operation_id="completeUpload")
async def complete_upload(
    upload_id: FromPath[str], request: AnyRequest, sim: Sim
) -> dict[str, Any]:
    upload = _pending(sim, upload_id)
    body = await json_object(request)
    part_ids = body.get("part_ids")
    if part_ids is None:
        raise missing_parameter("part_ids")
    if not isinstance(part_ids, list) or not all(isinstance(item, str) for item in part_ids):
        raise invalid_type("part_ids", "an array of strings", part_ids)
    if len(set(part_ids)) != len(part_ids):
        raise OpenAIError(400, "Each part id may appear only once.", param="part_ids")
    unknown = [item for item in part_ids if item not in upload.parts]
    if unknown:
        raise OpenAIError(
            400, f"Part {unknown[0]} does not belong to upload {upload_id}.", param="part_ids"
        )
    content = b"".join(upload.parts[item].data for item in part_ids)
    if len(content) != upload.declared_bytes:
        raise OpenAIError(
            400,
            f"The number of bytes uploaded ({len(content)}) does not match the number of bytes "
            f"declared when the upload was created ({upload.declared_bytes}).",
            param="part_ids",
        )
    md5 = body.get("md5")
    if md5 and hashlib.md5(content, usedforsecurity=False).hexdigest() != md5:
        raise OpenAIError(
            400, "The md5 checksum of the uploaded bytes does not match.", param="md5"
        )
    if upload.purpose == "fine-tune":
        refuse_bad_fine_tune_file(content, "part_ids")
    sim.end_upload(upload, "completed", sim.add_file(upload.filename, upload.purpose, content))
    return upload.to_dict()


@post("/uploads/{upload_id:str}/cancel", status_code=200, operation_id="cancelUpload")
async def cancel_upload(upload_id: FromPath[str], sim: Sim) -> dict[str, Any]:
    upload = _pending(sim, upload_id)
    sim.end_upload(upload, "cancelled")
    return upload.to_dict()


handlers = [create_upload, add_part, complete_upload, cancel_upload]
