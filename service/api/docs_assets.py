"""The Swagger UI files `/docs` loads, served from the installed swagger-ui-py package,
so the interactive docs work on a machine without internet (no CDN)."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from litestar import Controller, get
from litestar.params import FromPath
from litestar.response import File

from service.errors import NotFound

DOCS_ASSETS = "/docs/assets"
# Only what the page loads; the package ships an editor as well.
FILES = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui-standalone-preset.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon-32x32.png": "image/png",
}


def _folder() -> Path:
    return Path(str(importlib.resources.files("swagger_ui") / "static"))


class DocsAssetsController(Controller):
    path = DOCS_ASSETS
    include_in_schema = False

    @get("/{name:str}", security=[{}], cache=3600)
    async def asset(self, name: FromPath[str]) -> File:
        if name not in FILES:
            raise NotFound(f"No docs asset {name!r}")
        return File(
            path=_folder() / name,
            media_type=FILES[name],
            content_disposition_type="inline",
            headers={"Cache-Control": "public, max-age=86400"},
        )
