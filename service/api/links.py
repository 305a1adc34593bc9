"""Absolute URLs for `Location` headers."""

from __future__ import annotations

from typing import Any

from litestar import Request


def location(request: Request[Any, Any, Any], path: str) -> str:
    """The URL of `path` on the host the caller used (no query string)."""
    return str(request.url.with_replacements(path=path, query=""))
