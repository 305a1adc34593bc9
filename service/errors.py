"""Domain errors.

Code below the HTTP edge raises these; one handler in `service.api.problems`
turns them into RFC 9457 problem responses. Nothing here knows about Litestar.
"""

from __future__ import annotations

from typing import Any, ClassVar


class ServiceError(Exception):
    """Base of every error the API reports on purpose."""

    status: ClassVar[int] = 400
    title: ClassVar[str] = "Bad request"
    code: ClassVar[str] = "bad_request"

    def __init__(
        self,
        detail: str,
        *,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code  # type: ignore[misc]
        self.extra = extra or {}
        self.headers = headers or {}


class BadRequest(ServiceError):
    pass


class Unauthorized(ServiceError):
    status = 401
    title = "Unauthorized"
    code = "unauthorized"


class Forbidden(ServiceError):
    status = 403
    title = "Forbidden"
    code = "forbidden"


class NotFound(ServiceError):
    status = 404
    title = "Not found"
    code = "not_found"


class RequestTimeout(ServiceError):
    """The caller sent its body too slowly (or stopped sending it)."""

    status = 408
    title = "Request timeout"
    code = "request_timeout"


class Conflict(ServiceError):
    status = 409
    title = "Conflict"
    code = "conflict"


class PayloadTooLarge(ServiceError):
    status = 413
    title = "Payload too large"
    code = "payload_too_large"


class UnsupportedMediaType(ServiceError):
    status = 415
    title = "Unsupported media type"
    code = "unsupported_media_type"


class Unprocessable(ServiceError):
    status = 422
    title = "Unprocessable content"
    code = "invalid_input"


class RateLimited(ServiceError):
    status = 429
    title = "Too many requests"
    code = "rate_limited"


class UpstreamError(ServiceError):
    """The provider failed in a way the caller should see (mapped from SDK errors)."""

    status = 502
    title = "Bad gateway"
    code = "upstream_error"


class UpstreamTimeout(ServiceError):
    status = 504
    title = "Gateway timeout"
    code = "upstream_timeout"


class ServiceUnavailable(ServiceError):
    status = 503
    title = "Service unavailable"
    code = "unavailable"
