"""Domain errors: what went wrong, in the service's own words.

Code below the HTTP edge raises these and knows nothing of status codes;
`service.api.problems` maps each kind to an RFC 9457 problem response in one
table. The worker catches them by meaning (an invalid dataset, a missing
record), never by status.
"""

from __future__ import annotations

from typing import Any, ClassVar


class ServiceError(Exception):
    """Base of every error the service reports on purpose.

    `code` is the stable machine-readable reason; `extra` adds fields to the
    problem document (for a dataset, `errors: [{line, path, code, message}]`);
    `retry_after` says when trying again may help, in seconds.
    """

    code: ClassVar[str] = "bad_request"

    def __init__(
        self,
        detail: str,
        *,
        extra: dict[str, Any] | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code  # type: ignore[misc]
        self.extra = extra or {}
        self.retry_after = retry_after


class MalformedRequest(ServiceError):
    """The request cannot be read as sent (a broken body, a bad field or cursor)."""

    code = "bad_request"


class Unauthenticated(ServiceError):
    """No credentials, or credentials nobody issued."""

    code = "unauthorized"

    def __init__(self, detail: str, *, invalid_token: bool = False) -> None:
        super().__init__(detail)
        self.invalid_token = invalid_token


class NotFound(ServiceError):
    """No such thing for this caller (also when it exists for another tenant)."""

    code = "not_found"


class TooSlow(ServiceError):
    """The caller sent its request body too slowly, or stopped sending it."""

    code = "request_timeout"


class Conflict(ServiceError):
    """The thing is in a state that forbids this action now."""

    code = "conflict"


class TooLarge(ServiceError):
    code = "payload_too_large"


class UnsupportedFormat(ServiceError):
    """The body is in a format this action does not take."""

    code = "unsupported_media_type"


class InvalidContent(ServiceError):
    """Well-formed, but not acceptable (an invalid dataset, a model that cannot train)."""

    code = "invalid_input"


class RateLimited(ServiceError):
    """Too much at once; `limit` is the budget when one applies."""

    code = "rate_limited"

    def __init__(
        self,
        detail: str,
        *,
        retry_after: float,
        code: str | None = None,
        limit: int | None = None,
    ) -> None:
        super().__init__(detail, code=code, retry_after=retry_after)
        self.limit = limit


class UpstreamFailed(ServiceError):
    """The provider failed in a way the caller should see."""

    code = "upstream_error"


class UpstreamTimedOut(ServiceError):
    code = "upstream_timeout"


class Unavailable(ServiceError):
    """A dependency (Redis, a provider, its configuration) is not there right now."""

    code = "unavailable"
