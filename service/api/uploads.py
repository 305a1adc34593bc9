"""Streaming multipart parsing for dataset uploads.

Litestar's own form parsing reads the whole body into memory first; a 500 MB
dataset must not. This reads the request stream chunk by chunk with
python-multipart's push parser, writes the `file` part straight to a scratch
file and keeps only the small text fields in memory.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from python_multipart.multipart import MultipartParser, parse_options_header

from service.domain.stamps import new_id
from service.errors import (
    MalformedRequest,
    RateLimited,
    ServiceError,
    TooLarge,
    UnsupportedFormat,
)
from service.resources import Resources
from service.store.slots import Slots

MAX_FIELD_BYTES = 64 * 1024
MAX_FIELDS = 32
# An upload's slot outlives its body deadline by this much (conversion, then storing).
UPLOAD_SLOT_SPARE_SECONDS = 300.0


@asynccontextmanager
async def upload_slot(resources: Resources, tenant: str) -> AsyncIterator[None]:
    """Hold one of the tenant's concurrent-upload slots (429 when all are taken)."""
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
        yield
    finally:
        await slots.release(holder)


@dataclass
class ParsedUpload:
    fields: dict[str, str] = field(default_factory=dict)
    filename: str | None = None
    file_bytes: int = 0
    sha256: str = ""


@dataclass
class _Part:
    """The multipart part being read."""

    name: str = ""
    is_file: bool = False
    header_field: bytes = b""
    headers: dict[bytes, bytes] = field(default_factory=dict)
    value: bytearray = field(default_factory=bytearray)

    def reset(self) -> None:
        self.name, self.is_file, self.header_field = "", False, b""
        self.headers = {}
        self.value = bytearray()


def boundary_of(content_type: str) -> bytes:
    media, params = parse_options_header(content_type)
    if media != b"multipart/form-data":
        raise UnsupportedFormat("Send multipart/form-data with a 'file' part, or application/json")
    boundary = params.get(b"boundary")
    if not boundary:
        raise MalformedRequest("multipart/form-data without a boundary", code="invalid_multipart")
    return boundary


async def receive_upload(
    stream: AsyncIterator[bytes], content_type: str, destination: Path, *, max_bytes: int
) -> ParsedUpload:
    """Write the `file` part to `destination`; return the other fields.

    Raises 413 as soon as the body passes `max_bytes` (nothing is kept), 400
    for a malformed body or a missing `file` part.
    """
    result = ParsedUpload()
    part = _Part()
    file_hash = hashlib.sha256()
    handle: IO[bytes] | None = None
    saw_file = False
    ended = False

    def on_part_begin() -> None:
        part.reset()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        part.header_field += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        key = part.header_field.lower()
        part.headers[key] = part.headers.get(key, b"") + data[start:end]

    def on_header_end() -> None:
        part.header_field = b""

    def on_headers_finished() -> None:
        nonlocal handle, saw_file
        _, params = parse_options_header(part.headers.get(b"content-disposition", b""))
        part.name = params.get(b"name", b"").decode("utf-8", "replace")
        if b"filename" in params or part.name == "file":
            if part.name != "file":
                raise MalformedRequest(
                    f"Unexpected file part {part.name!r}; send the dataset as 'file'"
                )
            if saw_file:
                raise MalformedRequest("Send exactly one 'file' part")
            saw_file = True
            part.is_file = True
            result.filename = params.get(b"filename", b"upload").decode("utf-8", "replace")[:255]
            handle = destination.open("wb")

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if part.is_file and handle is not None:
            piece = data[start:end]
            handle.write(piece)
            file_hash.update(piece)
            result.file_bytes += len(piece)
            return
        part.value += data[start:end]
        if len(part.value) > MAX_FIELD_BYTES:
            raise MalformedRequest(
                f"Form field {part.name!r} is longer than {MAX_FIELD_BYTES} bytes"
            )

    def on_part_end() -> None:
        nonlocal handle
        if part.is_file:
            if handle is not None:
                handle.close()
                handle = None
            return
        if len(result.fields) >= MAX_FIELDS:
            raise MalformedRequest("Too many form fields")
        try:
            result.fields[part.name] = bytes(part.value).decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedRequest(f"Form field {part.name!r} is not UTF-8 text") from None

    def on_end() -> None:
        nonlocal ended
        ended = True

    parser = MultipartParser(
        boundary_of(content_type),
        callbacks={
            "on_end": on_end,
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    received = 0
    try:
        async for chunk in stream:
            received += len(chunk)
            if received > max_bytes:
                raise TooLarge(
                    f"The upload is larger than the {max_bytes} bytes this service accepts",
                    extra={"limit_bytes": max_bytes},
                )
            parser.write(chunk)
        parser.finalize()
    except ServiceError:
        raise
    except Exception as exc:  # python-multipart raises several unrelated types
        raise MalformedRequest(
            f"Malformed multipart body: {exc}", code="invalid_multipart"
        ) from None
    finally:
        if handle is not None:
            handle.close()
    if not ended:
        # A body cut short (a dropped connection, a proxy limit) parses as a shorter
        # file; only the closing boundary proves that everything arrived.
        raise MalformedRequest(
            "The upload ended before the multipart body's closing boundary, so the file "
            "may be incomplete; nothing was stored. Send it again.",
            code="incomplete_upload",
        )
    if not saw_file:
        raise MalformedRequest("The form has no 'file' part", code="missing_file")
    result.sha256 = file_hash.hexdigest()
    return result
