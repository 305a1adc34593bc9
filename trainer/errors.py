"""OpenAI's error body, and the wording of the request errors the trainer answers with.

Every error leaves the server as `{"error": {"message", "type", "param", "code"}}`
with OpenAI's status, which is what the official SDKs turn into their exception
classes. Code anywhere raises `APIError`; one handler in `app.py` renders it.
"""

from __future__ import annotations

from typing import Any

MISSING_API_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization "
    "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)

UNPARSABLE_JSON = (
    "We could not parse the JSON body of your request. The API expects a JSON object as the "
    "request body."
)

SERVER_ERROR = "The server had an error while processing your request. Sorry about that!"


class APIError(Exception):
    """An error response in OpenAI's shape, raised anywhere and rendered by one handler."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",  # OpenAI's own field name
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type_: str, param: str | None, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def invalid_api_key(given: str) -> APIError:
    shown = given[:3] + "*" * max(0, min(len(given) - 7, 20)) + given[-4:] if given else ""
    return APIError(
        401,
        f"Incorrect API key provided: {shown}. Set the key this trainer was started with "
        "(TRAINER_API_KEY).",
        code="invalid_api_key",
    )


def missing_parameter(param: str) -> APIError:
    return APIError(
        400,
        f"Missing required parameter: '{param}'.",
        param=param,
        code="missing_required_parameter",
    )


def unknown_parameter(param: str) -> APIError:
    return APIError(
        400,
        f"Unrecognized request argument supplied: {param}",
        param=param,
        code="unknown_parameter",
    )


def invalid_type(param: str, expected: str, value: object) -> APIError:
    return APIError(
        400,
        f"Invalid type for '{param}': expected {expected}, but got {json_type_name(value)} "
        "instead.",
        param=param,
        code="invalid_type",
    )


def invalid_value(param: str, value: object, supported: list[str]) -> APIError:
    quoted = [f"'{item}'" for item in supported]
    choices = quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + f", and {quoted[-1]}"
    return APIError(
        400,
        f"Invalid value: '{value}'. Supported values are: {choices}.",
        param=param,
        code="invalid_value",
    )


def out_of_range(param: str, value: float, minimum: float, maximum: float) -> APIError:
    """A number outside [minimum, maximum], worded as OpenAI words it."""
    kind = "integer" if isinstance(value, int) else "number"
    code_kind = "integer" if isinstance(value, int) else "decimal"
    if value > maximum:
        return APIError(
            400,
            f"Invalid '{param}': {kind} above maximum value. Expected a value <= {maximum}, "
            f"but got {value} instead.",
            param=param,
            code=f"{code_kind}_above_max_value",
        )
    return APIError(
        400,
        f"Invalid '{param}': {kind} below minimum value. Expected a value >= {minimum}, "
        f"but got {value} instead.",
        param=param,
        code=f"{code_kind}_below_min_value",
    )


def string_length(param: str, value: str, minimum: int, maximum: int) -> APIError:
    if len(value) > maximum:
        return APIError(
            400,
            f"Invalid '{param}': string too long. Expected a string with maximum length "
            f"{maximum}, but got a string with length {len(value)} instead.",
            param=param,
            code="string_above_max_length",
        )
    return APIError(
        400,
        f"Invalid '{param}': string too short. Expected a string with minimum length {minimum}, "
        f"but got a string with length {len(value)} instead.",
        param=param,
        code="string_below_min_length",
    )


def no_such_file(file_id: str) -> APIError:
    return APIError(404, f"No such File object: {file_id}", param="id")


def no_such_job(job_id: str) -> APIError:
    return APIError(
        404, f"Fine-tuning job {job_id} not found.", param="fine_tuning_job_id", code=None
    )


def model_not_found(model: str) -> APIError:
    return APIError(
        404,
        f"The model `{model}` does not exist or you do not have access to it.",
        param="model",
        code="model_not_found",
    )


def json_type_name(value: object) -> str:
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
