"""RFC 9457 problem responses: the one error shape at the edge.

Domain code raises `service.errors.ServiceError`; Litestar raises its own
`HTTPException`s (validation, 404 route, 405, 413); anything else is a bug and
answers 500 without leaking internals. All of them leave as
`application/problem+json` with `type`, `title`, `status`, `detail`, and
`instance` (the request id, so a caller can quote it to us).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example
from redis.exceptions import RedisError

from service.errors import (
    Conflict,
    InvalidContent,
    MalformedRequest,
    NotFound,
    RateLimited,
    ServiceError,
    TooLarge,
    TooSlow,
    Unauthenticated,
    Unavailable,
    UnsupportedFormat,
    UpstreamFailed,
    UpstreamTimedOut,
)
from service.logs import request_id_var

logger = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "https://docs.finetune.local/problems/"


@dataclass
class ProblemIssue:
    """One located problem in a request (a dataset line, a body field)."""

    message: str
    code: str
    line: int | None = None
    path: str | None = None


@dataclass
class Problem:
    """An RFC 9457 problem document."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    instance: str | None = None
    errors: list[ProblemIssue] | None = None
    error_total: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def problem_response(
    status: int,
    *,
    code: str,
    title: str,
    detail: str,
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response[dict[str, Any]]:
    body: dict[str, Any] = {
        "type": TYPE_BASE + code.replace("_", "-"),
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }
    request_id = request_id_var.get()
    if request_id:
        body["instance"] = f"urn:request:{request_id}"
    if extra:
        body.update(extra)
    return Response(
        content=body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers
    )


# Each kind of domain error, as HTTP says it: one table for the whole API.
_STATUS: dict[type[ServiceError], tuple[int, str]] = {
    MalformedRequest: (400, "Bad request"),
    Unauthenticated: (401, "Unauthorized"),
    NotFound: (404, "Not found"),
    TooSlow: (408, "Request timeout"),
    Conflict: (409, "Conflict"),
    TooLarge: (413, "Payload too large"),
    UnsupportedFormat: (415, "Unsupported media type"),
    InvalidContent: (422, "Unprocessable content"),
    RateLimited: (429, "Too many requests"),
    UpstreamFailed: (502, "Bad gateway"),
    Unavailable: (503, "Service unavailable"),
    UpstreamTimedOut: (504, "Gateway timeout"),
}
_REALM = 'Bearer realm="finetune-service"'


def status_of(error: ServiceError) -> tuple[int, str]:
    for kind in type(error).__mro__:
        if kind in _STATUS:
            return _STATUS[kind]
    return 400, "Bad request"


def _headers_of(error: ServiceError) -> dict[str, str]:
    headers: dict[str, str] = {}
    if error.retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(error.retry_after)))
    if isinstance(error, RateLimited) and error.limit is not None:
        headers["RateLimit-Limit"] = str(error.limit)
        headers["RateLimit-Remaining"] = "0"
        headers["RateLimit-Reset"] = headers["Retry-After"]
    if isinstance(error, Unauthenticated):
        headers["WWW-Authenticate"] = (
            f'{_REALM}, error="invalid_token"' if error.invalid_token else _REALM
        )
    return headers


def _service_error(_: Request[Any, Any, Any], exc: ServiceError) -> Response[dict[str, Any]]:
    status, title = status_of(exc)
    return problem_response(
        status,
        code=exc.code,
        title=title,
        detail=exc.detail,
        extra=exc.extra,
        headers=_headers_of(exc),
    )


def _validation_error(
    _: Request[Any, Any, Any], exc: ValidationException
) -> Response[dict[str, Any]]:
    issues = []
    for item in exc.extra if isinstance(exc.extra, list) else []:
        if not isinstance(item, dict):
            continue
        key = item.get("key")
        # Litestar names where a bad value came from (query, path, header, body)
        # with an enum; a caller wants the parameter's name, as they sent it.
        source = getattr(item.get("source"), "value", item.get("source"))
        path = (
            key
            if key and source in (None, "query", "path", "header", "cookie")
            else (f"{source}.{key}" if source and key else key or source)
        )
        issues.append(
            {"line": None, "path": path, "code": "invalid", "message": item.get("message")}
        )
    first = issues[0] if issues else None
    if first and first["path"]:
        detail = f"{first['path']}: {first['message']}"
    elif first and first["message"]:
        # A check across fields (give one of two) names no single field; its message does.
        detail = str(first["message"]).removeprefix("Value error, ")
    else:
        detail = str(exc.detail)
    return problem_response(
        400,
        code="invalid_request",
        title="Invalid request",
        detail=detail,
        extra={"errors": issues} if issues else None,
    )


def _http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, Any]]:
    status = exc.status_code
    phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    code = phrase.lower().replace(" ", "_").replace("-", "_")
    headers = dict(exc.headers or {})
    detail = exc.detail if exc.detail and exc.detail != phrase else phrase
    if status == 413:
        detail = "The request body is larger than this route accepts"
    return problem_response(status, code=code, title=phrase, detail=detail, headers=headers)


def _redis_down(_: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    logger.warning("redis unavailable", extra={"error_type": type(exc).__name__})
    return problem_response(
        503,
        code="redis_unavailable",
        title="Service unavailable",
        detail="The service's store is unreachable; retry shortly",
        headers={"Retry-After": "2"},
    )


def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    logger.exception(
        "unhandled error", extra={"path": request.url.path, "error_type": type(exc).__name__}
    )
    return problem_response(
        500,
        code="internal_error",
        title="Internal server error",
        detail="The service failed to handle this request; quote the instance id when reporting it",
    )


Handler = Callable[[Request[Any, Any, Any], Any], Response[Any]]


def exception_handlers(dialects: dict[str, dict[type[Exception], Handler]] | None = None) -> Any:
    """The problem-document handlers; a request under one of `dialects`' path prefixes
    is answered by that dialect's handlers instead (the OpenAI-shaped /v1)."""
    native: dict[type[Exception], Handler] = {
        ServiceError: _service_error,
        ValidationException: _validation_error,
        HTTPException: _http_error,
        RedisError: _redis_down,
        Exception: _unexpected,
    }
    if not dialects:
        return native
    chosen = dialects

    def dispatch(kind: type[Exception]) -> Handler:
        def handle(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
            path = request.url.path
            for prefix, handlers in chosen.items():
                if path == prefix.rstrip("/") or path.startswith(prefix):
                    for candidate in type(exc).__mro__:
                        if candidate in handlers:
                            return handlers[candidate](request, exc)
            return native[kind](request, exc)

        return handle

    return {kind: dispatch(kind) for kind in native}


def problem_spec(description: str, example_status: int, example_detail: str) -> ResponseSpec:
    status_phrase = HTTPStatus(example_status).phrase
    code = status_phrase.lower().replace(" ", "_")
    return ResponseSpec(
        data_container=Problem,
        description=description,
        media_type=PROBLEM_MEDIA_TYPE,
        generate_examples=False,
        examples=[
            Example(
                summary=status_phrase,
                value={
                    "type": TYPE_BASE + code.replace("_", "-"),
                    "title": status_phrase,
                    "status": example_status,
                    "detail": example_detail,
                    "code": code,
                },
            )
        ],
    )


_COMMON = {
    400: ("The request is malformed", "body.model: Field required"),
    401: ("Missing or unknown API key", "Send Authorization: Bearer <key>"),
    404: ("No such resource for this tenant", "No dataset ds_123 for this tenant"),
    408: ("The body arrived too slowly", "The request body stalled (nothing for 30 s)"),
    409: ("The resource is in a state that forbids this", "Job job_123 is running"),
    413: ("The body is too large", "The request body is larger than this route accepts"),
    415: ("The body's media type is not accepted", "Send multipart/form-data or application/json"),
    422: ("The content is well-formed but invalid", "The dataset has 3 invalid lines"),
    429: ("Rate limited; retry after Retry-After seconds", "Too many requests for this tenant"),
    502: ("The provider failed", "The provider answered 500"),
    503: ("A dependency is unavailable", "Redis is unreachable"),
    504: ("The provider timed out", "The provider did not answer in time"),
}


def problems(*statuses: int) -> dict[int, ResponseSpec]:
    """Error responses to declare on a route, so they appear in the OpenAPI document."""
    specs = {}
    for status in statuses:
        description, example_detail = _COMMON[status]
        specs[status] = problem_spec(description, status, example_detail)
    return specs
