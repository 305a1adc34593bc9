"""OpenAI's error body and the wording of the errors the simulator answers with.

Every error leaves the simulator as `{"error": {"message", "type", "param", "code"}}`,
which is what the SDK parses into its exception classes.
"""

from __future__ import annotations

from typing import Any

MISSING_API_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization "
    "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field "
    "(with blank username) if you're accessing the API from your browser and are prompted for "
    "a username. You can obtain an API key from https://platform.openai.com/account/api-keys."
)

UNPARSABLE_JSON = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
    "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
    "sent was not valid JSON. If you have trouble figuring out how to fix this, please contact "
    "us through our help center at help.openai.com.)"
)


class OpenAIError(Exception):
    """An error response in OpenAI's shape; raised anywhere, rendered by one handler."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",  # OpenAI's own field name
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def error_body(message: str, type_: str, param: str | None, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def missing_parameter(param: str) -> OpenAIError:
    return OpenAIError(
        400,
        f"Missing required parameter: '{param}'.",
        param=param,
        code="missing_required_parameter",
    )


def invalid_type(param: str, expected: str, value: object) -> OpenAIError:
    return OpenAIError(
        400,
        f"Invalid type for '{param}': expected {expected}, but got {json_type_name(value)} "
        "instead.",
        param=param,
        code="invalid_type",
    )


def invalid_value(param: str, value: object, supported: list[str]) -> OpenAIError:
    quoted = [f"'{item}'" for item in supported]
    choices = quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + f", and {quoted[-1]}"
    return OpenAIError(
        400,
        f"Invalid value: '{value}'. Supported values are: {choices}.",
        param=param,
        code="invalid_value",
    )


def integer_out_of_range(param: str, value: float, minimum: float, maximum: float) -> OpenAIError:
    if value > maximum:
        return OpenAIError(
            400,
            f"Invalid '{param}': integer above maximum value. Expected a value <= {maximum}, "
            f"but got {value} instead.",
            param=param,
            code="integer_above_max_value",
        )
    return OpenAIError(
        400,
        f"Invalid '{param}': integer below minimum value. Expected a value >= {minimum}, "
        f"but got {value} instead.",
        param=param,
        code="integer_below_min_value",
    )


def number_not_positive(param: str, value: float) -> OpenAIError:
    return OpenAIError(
        400,
        f"Invalid '{param}': number below minimum value. Expected a value > 0, but got {value} "
        "instead.",
        param=param,
        code="decimal_below_min_value",
    )


def string_length(param: str, value: str, minimum: int, maximum: int) -> OpenAIError:
    if len(value) > maximum:
        return OpenAIError(
            400,
            f"Invalid '{param}': string too long. Expected a string with maximum length "
            f"{maximum}, but got a string with length {len(value)} instead.",
            param=param,
            code="string_above_max_length",
        )
    return OpenAIError(
        400,
        f"Invalid '{param}': string too short. Expected a string with minimum length {minimum}, "
        "but got an empty string instead.",
        param=param,
        code="string_below_min_length",
    )


def unknown_parameter(param: str) -> OpenAIError:
    return OpenAIError(
        400,
        f"Unrecognized request argument supplied: {param}",
        param=param,
        code="unknown_parameter",
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
