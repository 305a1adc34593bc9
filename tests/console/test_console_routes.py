"""What `GET /console` serves, over real HTTP: the files, their headers, nothing else."""

from __future__ import annotations

import json
import re

import pytest

from service.console.routes import STATIC_DIR
from service.openapi_export import export


async def test_the_page_is_html_with_a_self_only_policy(client) -> None:
    response = await client.get("/console")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    policy = response.headers["content-security-policy"]
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert "unsafe" not in policy
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-request-id"]


async def test_the_page_loads_only_files_from_its_own_origin(client) -> None:
    html = (await client.get("/console")).text
    # Nothing inline: the policy would block it.
    assert "<script>" not in html
    assert "style=" not in html
    referenced = re.findall(r'(?:src|href)="([^"#]+)"', html)
    assert referenced
    for url in referenced:
        assert url.startswith("/console/assets/"), url
        answer = await client.get(url)
        assert answer.status_code == 200, url
    for module in STATIC_DIR.glob("*.js"):
        source = module.read_text(encoding="utf-8")
        assert "innerHTML" not in source, module.name
        assert "eval(" not in source, module.name
        for imported in re.findall(r'from "\./([^"]+)"', source):
            assert (STATIC_DIR / imported).is_file(), f"{module.name} imports {imported}"


async def test_assets_have_their_types_and_revalidate_by_etag(client) -> None:
    script = await client.get("/console/assets/app.js")
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert script.headers["cache-control"] == "no-cache"
    style = await client.get("/console/assets/console.css")
    assert style.headers["content-type"] == "text/css; charset=utf-8"
    icon = await client.get("/console/assets/icon.svg")
    assert icon.headers["content-type"] == "image/svg+xml"
    again = await client.get(
        "/console/assets/app.js", headers={"If-None-Match": script.headers["etag"]}
    )
    assert again.status_code == 304
    assert again.content == b""


@pytest.mark.parametrize(
    "path",
    [
        "/console/assets/missing.js",
        "/console/assets/index.html",
        "/console/assets/..%2Froutes.py",
        "/console/assets/%2E%2E%2F__init__.py",
        "/console/assets/.hidden.js",
    ],
)
async def test_nothing_but_the_listed_assets_is_served(client, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_the_page_needs_no_key_but_the_data_does(client) -> None:
    assert (await client.get("/console")).status_code == 200
    assert (await client.get("/datasets")).status_code == 401


def test_the_console_is_not_in_the_openapi_document() -> None:
    document = json.loads(export())
    assert not [path for path in document["paths"] if path.startswith("/console")]
