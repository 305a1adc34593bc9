"""`GET /console` and its assets, straight from the files in `static/`.

No build step and nothing from other hosts: the page, its stylesheet and its
ES modules are files in this package. Every answer carries a Content-Security-
Policy that allows only this origin, no inline script or style, no framing.

The routes are left out of the OpenAPI document on purpose: the document is
the machine contract clients are generated from (and that schemathesis
fuzzes), and an HTML page is no operation a client calls. The page itself only
uses operations that are in the document.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from litestar import Controller, Request, Response, get
from litestar.datastructures import ResponseHeader
from litestar.params import FromPath

from service.errors import NotFound

STATIC_DIR = Path(__file__).resolve().parent / "static"

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)

# Asset names are plain file names in static/: no folders, so no way out of it.
_ASSET_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*\.(js|css|svg)$")
# Litestar adds "; charset=utf-8" to text/* types itself.
_MEDIA_TYPES = {
    "js": "text/javascript",
    "css": "text/css",
    "svg": "image/svg+xml",
    "html": "text/html",
}


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    media_type: str
    etag: str


# Filled on first request (nothing is read at import time); the files are part
# of the release, so they never change under a running process.
_cache: dict[str, StaticFile] = {}


async def _load(name: str) -> StaticFile:
    found = _cache.get(name)
    if found is None:
        path = anyio.Path(STATIC_DIR / name)
        if not await path.is_file():
            raise NotFound(f"The console has no file {name!r}", code="not_found")
        body = await path.read_bytes()
        found = StaticFile(
            body=body,
            media_type=_MEDIA_TYPES[name.rsplit(".", 1)[1]],
            etag='"' + hashlib.sha256(body).hexdigest()[:32] + '"',
        )
        _cache[name] = found
    return found


def _answer(request: Request[Any, Any, Any], file: StaticFile) -> Response[bytes]:
    # Revalidate every time (cheap, by ETag), so a new release is picked up at once.
    headers = {"ETag": file.etag, "Cache-Control": "no-cache"}
    if request.headers.get("if-none-match") == file.etag:
        return Response(b"", status_code=304, headers=headers)
    return Response(file.body, media_type=file.media_type, headers=headers)


class ConsoleController(Controller):
    path = "/console"
    include_in_schema = False
    response_headers = (
        ResponseHeader(name="Content-Security-Policy", value=CONTENT_SECURITY_POLICY),
        ResponseHeader(name="X-Content-Type-Options", value="nosniff"),
        ResponseHeader(name="Referrer-Policy", value="no-referrer"),
        ResponseHeader(name="X-Frame-Options", value="DENY"),
    )

    @get("/", name="console:page")
    async def page(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        return _answer(request, await _load("index.html"))

    @get("/assets/{name:str}", name="console:asset")
    async def asset(self, request: Request[Any, Any, Any], name: FromPath[str]) -> Response[bytes]:
        if not _ASSET_NAME.match(name):
            raise NotFound(f"The console has no file {name!r}", code="not_found")
        return _answer(request, await _load(name))
