"""Errors in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.

The SDK picks its exception class from the HTTP status alone (400
BadRequestError, 401 AuthenticationError, 404 NotFoundError, 429
RateLimitError...) and shows `message`; `param` names the request field.
Native errors (`ServiceError`) are translated here, in one table, so a use case
raises the same error whichever API called it.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example
from redis.exceptions import RedisError

from service.api.problems import status_of
from service.errors import RateLimited, ServiceError, Unauthenticated

logger = logging.getLogger(__name__)

UNPARSABLE_JSON = (
    "We could not parse the JSON body of your request. The API expects a JSON payload, "
    "and what was sent was not valid JSON."
)
SERVER_ERROR = (
    "The server had an error while processing your request. Quote the request id "
    "(x-request-id) when reporting it."
)

# Our request fields, as the OpenAI-shaped request names them.
PARAM_NAMES = {
    "dataset_id": "training_file",
    "validation_dataset_id": "validation_file",
}


@dataclass
class ErrorDetail:
    """OpenAI's four error fields."""

    message: str
    type: str
    param: str | None
    code: str | None


@dataclass
class ErrorBody:
    """OpenAI's error body, which the SDK reads into its exception classes."""

    error: ErrorDetail


# The statuses every /v1 route may answer with OpenAI's error body: a bad request
# (the native 409, 415 and 422 included), a missing key, an unknown id, the rate limit.
COMMON_STATUSES = (400, 401, 404, 429)
_EXAMPLES = {
    400: ("Missing required parameter: 'model'.", "model", "missing_required_parameter"),
    401: ("Incorrect API key provided.", None, "invalid_api_key"),
    404: ("No such fine-tuning job: job_123", "fine_tuning_job_id", None),
    413: ("The request body is larger than this route accepts", None, None),
    429: ("Too many requests for this tenant", None, "rate_limit_exceeded"),
    502: ("The provider failed", None, None),
    503: ("A dependency is unavailable", None, None),
    504: ("The provider did not answer in time", None, None),
}


def openai_errors(*extra: int) -> dict[int, ResponseSpec]:
    """The error responses of a /v1 route, declared for the contract."""
    specs = {}
    for status in sorted({*COMMON_STATUSES, *extra}):
        message, param, code = _EXAMPLES[status]
        kind = "server_error" if status >= 500 else "invalid_request_error"
        kind = "requests" if status == 429 else kind
        specs[status] = ResponseSpec(
            data_container=ErrorBody,
            description=HTTPStatus(status).phrase,
            generate_examples=False,
            examples=[
                Example(
                    summary=HTTPStatus(status).phrase,
                    value={
                        "error": {"message": message, "type": kind, "param": param, "code": code}
                    },
                )
            ],
        )
    return specs


class OpenAIError(Exception):
    """An error the facade answers as it stands (status, and OpenAI's four fields)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str = "invalid_request_error",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type
        self.headers = headers or {}

    def response(self) -> Response[dict[str, Any]]:
        body = {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }
        return Response(
            body, status_code=self.status, media_type="application/json", headers=self.headers
        )


def not_found(what: str, ident: str, param: str) -> OpenAIError:
    return OpenAIError(404, f"No such {what}: {ident}", param=param)


def _first_param(exc: ServiceError) -> str | None:
    errors = exc.extra.get("errors") if isinstance(exc.extra, dict) else None
    if not errors or not isinstance(errors, list) or not isinstance(errors[0], dict):
        return None
    path = errors[0].get("path")
    if not isinstance(path, str):
        return None
    head, dot, rest = path.partition(".")
    return PARAM_NAMES.get(head, head) + dot + rest


def translate(exc: ServiceError) -> OpenAIError:
    """A native error as OpenAI would have answered it."""
    status, _ = status_of(exc)
    headers: dict[str, str] = {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    kind = "invalid_request_error"
    code: str | None = exc.code
    if isinstance(exc, Unauthenticated):
        code = "invalid_api_key" if exc.invalid_token else None
    elif isinstance(exc, RateLimited):
        kind, code = "requests", "rate_limit_exceeded"
    elif status >= 500:
        kind = "server_error"
    elif status == 409 and exc.code == "idempotency_in_progress":
        pass  # the SDK retries a 409, which is what the caller wants here
    elif status in (409, 415, 422):
        # OpenAI answers a request it cannot carry out with 400.
        status = 400
    return OpenAIError(
        status, exc.detail, param=_first_param(exc), code=code, type=kind, headers=headers
    )


# Pydantic's tags for the member of a union an error came from; not request fields.
_UNION_TAG = re.compile(
    r"^(int|float|str|bool|dict|list|none|constrained-[a-z]+|literal\[.*\]|[a-z-]+\[.*\])$"
)


def _param(loc: Sequence[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] == "data":
        parts = parts[1:]
    return ".".join(p for p in parts if not _UNION_TAG.match(p))


def _kind_of(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


RELATIONS = {
    "greater_than_equal": ">=",
    "greater_than": ">",
    "less_than_equal": "<=",
    "less_than": "<",
}
_EXPECTED = {
    "int": "an integer",
    "float": "a decimal",
    "string": "a string",
    "bool": "a boolean",
    "dict": "an object",
    "list": "an array",
}


def from_pydantic(error: Mapping[str, Any]) -> OpenAIError:
    """One pydantic error as OpenAI words it (its message and code for the case)."""
    kind = str(error.get("type", ""))
    param = _param(error.get("loc", ()))
    value = error.get("input")
    ctx = error.get("ctx") or {}
    if kind == "missing":
        return OpenAIError(
            400,
            f"Missing required parameter: '{param}'.",
            param=param,
            code="missing_required_parameter",
        )
    if kind == "extra_forbidden":
        return OpenAIError(
            400,
            f"Unrecognized request argument supplied: {param}",
            param=param,
            code="unknown_parameter",
        )
    if kind == "string_too_long":
        return OpenAIError(
            400,
            f"Invalid '{param}': string too long. Expected a string with maximum length "
            f"{ctx.get('max_length')}, but got a string with length {len(str(value))} instead.",
            param=param,
            code="string_above_max_length",
        )
    if kind == "string_too_short":
        return OpenAIError(
            400,
            f"Invalid '{param}': string too short. Expected a string with minimum length "
            f"{ctx.get('min_length')}, but got a string with length {len(str(value))} instead.",
            param=param,
            code="string_below_min_length",
        )
    if kind == "too_short" and isinstance(value, list) and not value:
        return OpenAIError(
            400,
            f"Invalid '{param}': empty array. Expected an array with minimum length "
            f"{ctx.get('min_length', 1)}, but got an empty array instead.",
            param=param,
            code="empty_array",
        )
    if kind == "too_long":
        size = len(value) if isinstance(value, dict | list) else 0
        if isinstance(value, dict):
            return OpenAIError(
                400,
                f"Invalid '{param}': too many properties. Expected an object with at most "
                f"{ctx.get('max_length')} properties, but got an object with {size} properties "
                "instead.",
                param=param,
                code="object_above_max_properties",
            )
        return OpenAIError(
            400,
            f"Invalid '{param}': array too long. Expected an array with maximum length "
            f"{ctx.get('max_length')}, but got an array with length {size} instead.",
            param=param,
            code="array_above_max_length",
        )
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        above = kind.startswith("less")
        bound = ctx.get("le", ctx.get("lt", ctx.get("ge", ctx.get("gt"))))
        number = "integer" if isinstance(value, int) else "decimal"
        relation = RELATIONS[kind]
        return OpenAIError(
            400,
            f"Invalid '{param}': {number} {'above maximum' if above else 'below minimum'} value. "
            f"Expected a value {relation} {bound}, but got {value} instead.",
            param=param,
            code=f"{number}_{'above_max' if above else 'below_min'}_value",
        )
    if kind.endswith("_type") or kind.endswith("_parsing"):
        expected = _EXPECTED.get(kind.split("_")[0], "another type")
        return OpenAIError(
            400,
            f"Invalid type for '{param}': expected {expected}, but got {_kind_of(value)} instead.",
            param=param,
            code="invalid_type",
        )
    if kind == "literal_error":
        return OpenAIError(
            400,
            f"Invalid value: '{value}'. Supported values are: {ctx.get('expected')}.",
            param=param,
            code="invalid_value",
        )
    return OpenAIError(
        400,
        f"Invalid '{param}': {error.get('msg', 'invalid value')}.",
        param=param,
        code="invalid_value",
    )


def _pick(errors: list[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The error to report: for a union ("auto" or a number), the number's complaint."""
    first = errors[0]
    same = [e for e in errors if _param(e.get("loc", ())) == _param(first.get("loc", ()))]
    return next((e for e in same if e.get("type") != "literal_error"), first)


def _openai_error(_: Request[Any, Any, Any], exc: OpenAIError) -> Response[dict[str, Any]]:
    return exc.response()


def _service_error(_: Request[Any, Any, Any], exc: ServiceError) -> Response[dict[str, Any]]:
    return translate(exc).response()


def _validation_error(
    _: Request[Any, Any, Any], exc: ValidationException
) -> Response[dict[str, Any]]:
    cause = exc.__cause__
    errors = getattr(cause, "errors", None)
    if isinstance(errors, list) and errors and isinstance(errors[0], Mapping):
        return from_pydantic(_pick(errors)).response()
    items = [i for i in (exc.extra if isinstance(exc.extra, list) else []) if isinstance(i, dict)]
    if items:
        key = str(items[0].get("key") or "")
        return OpenAIError(
            400, f"Invalid '{key}': {items[0].get('message')}.", param=key or None
        ).response()
    detail = str(exc.detail or "")
    if "json" in detail.lower() or "decode" in detail.lower():
        return OpenAIError(400, UNPARSABLE_JSON).response()
    return OpenAIError(400, detail or "Invalid request").response()


def _http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, Any]]:
    status = exc.status_code
    if status in (404, 405):
        # The route itself is unknown (a handler's own 404s are OpenAIError/NotFound).
        message = f"Invalid URL ({request.method} {request.url.path})"
    elif status == 413:
        message = "The request body is larger than this route accepts"
    elif status == 400 and "json" in str(exc.detail).lower():
        message = UNPARSABLE_JSON
    else:
        message = str(exc.detail)
    return OpenAIError(status, message, headers=dict(exc.headers or {})).response()


def _redis_down(_: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    logger.warning("redis unavailable", extra={"error_type": type(exc).__name__})
    return OpenAIError(
        503,
        "The service's store is unreachable; retry shortly",
        type="server_error",
        headers={"Retry-After": "2"},
    ).response()


def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    logger.exception(
        "unhandled error", extra={"path": request.url.path, "error_type": type(exc).__name__}
    )
    return OpenAIError(500, SERVER_ERROR, type="server_error").response()


def exception_handlers() -> dict[type[Exception], Any]:
    """The facade's error dialect, for every request under /v1."""
    return {
        OpenAIError: _openai_error,
        ServiceError: _service_error,
        ValidationException: _validation_error,
        HTTPException: _http_error,
        RedisError: _redis_down,
        Exception: _unexpected,
    }
