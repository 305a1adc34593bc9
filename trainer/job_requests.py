"""Checking a create-job request before the job exists, as OpenAI checks it.

Only request problems answer 400 (unknown model or file, values out of range, a
method this trainer does not run). Problems inside a training file never do: the
job is accepted in `validating_files` and fails with the file's error.

Beyond OpenAI's fields the request may carry a `lora` object (with the SDK:
`extra_body={"lora": {...}}`): `r`, `alpha`, `dropout`, `target_modules`.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from trainer.errors import (
    APIError,
    invalid_type,
    invalid_value,
    missing_parameter,
    out_of_range,
    string_length,
    unknown_parameter,
)
from trainer.jobs import Auto, Requested
from trainer.model_catalog import ModelCatalog
from trainer.spec import LoraSettings, parse_lora
from trainer.store import FileStore

KNOWN_FIELDS = frozenset(
    {
        "model",
        "training_file",
        "validation_file",
        "suffix",
        "seed",
        "metadata",
        "method",
        "hyperparameters",
        "integrations",
        "lora",
    }
)
METHODS = ["supervised", "dpo", "reinforcement"]
MAX_SEED = 2_147_483_647


@dataclass(frozen=True, slots=True)
class JobRequest:
    model: str
    training_file: str
    validation_file: str | None
    suffix: str | None
    seed: int
    metadata: dict[str, str] | None
    requested: Requested
    lora: dict[str, Any]  # the keys the request set, checked


def parse_job_request(body: dict[str, Any], catalog: ModelCatalog, files: FileStore) -> JobRequest:
    for key in body:
        if key not in KNOWN_FIELDS:
            raise unknown_parameter(key)
    model = _required_string(body, "model")
    training_file = _required_string(body, "training_file")
    base = catalog.get(model)
    if base is None and model.startswith("ft:"):
        raise APIError(
            400,
            f"Model {model} is a fine-tuned model; this trainer fine-tunes base models only. "
            "Start a new job on its base model.",
            param="model",
            code="model_not_available",
        )
    if base is None:
        raise APIError(
            400,
            f"Model {model} is not available for fine-tuning or does not exist.",
            param="model",
            code="model_not_available",
        )
    if base.chat_template() is None:
        raise APIError(
            400,
            f"Model {model} has no chat template, so it cannot be fine-tuned on chat "
            "examples. Add a chat_template.jinja to its folder.",
            param="model",
            code="model_not_available",
        )
    requested = _method(body)
    _check_file(files, training_file, "training_file")
    validation_file = body.get("validation_file")
    if validation_file is not None:
        if not isinstance(validation_file, str):
            raise invalid_type("validation_file", "a string", validation_file)
        _check_file(files, validation_file, "validation_file")

    suffix = body.get("suffix")
    if suffix is not None:
        if not isinstance(suffix, str):
            raise invalid_type("suffix", "a string", suffix)
        if not 1 <= len(suffix) <= 64:
            raise string_length("suffix", suffix, 1, 64)
        if ":" in suffix:
            # The tuned model's name is colon-separated; a colon would make it ambiguous.
            raise APIError(400, "Invalid 'suffix': it may not contain ':'.", param="suffix")

    seed = body.get("seed")
    if seed is None:
        seed = secrets.randbelow(MAX_SEED + 1)
    elif not isinstance(seed, int) or isinstance(seed, bool):
        raise invalid_type("seed", "an integer", seed)
    elif not 0 <= seed <= MAX_SEED:
        raise out_of_range("seed", seed, 0, MAX_SEED)

    integrations = body.get("integrations")
    if integrations not in (None, []):
        raise APIError(
            400,
            "This trainer does not support integrations (such as Weights & Biases); "
            "leave 'integrations' out. Per-step metrics are in the job's events.",
            param="integrations",
            code="unsupported_value",
        )

    lora = body.get("lora")
    if lora is None:
        lora = {}
    # Checked against any base values now, so a bad key is a 400 at creation.
    parse_lora(lora, "lora", LoraSettings())

    return JobRequest(
        model=model,
        training_file=training_file,
        validation_file=validation_file,
        suffix=suffix,
        seed=seed,
        metadata=_metadata(body.get("metadata")),
        requested=requested,
        lora=dict(lora),
    )


def _required_string(body: dict[str, Any], field: str) -> str:
    value = body.get(field)
    if value is None:
        raise missing_parameter(field)
    if not isinstance(value, str):
        raise invalid_type(field, "a string", value)
    return value


def _check_file(files: FileStore, file_id: str, param: str) -> None:
    stored = files.get(file_id)
    if stored is None:
        raise APIError(400, f"invalid {param}: {file_id}", param=param)
    if stored.purpose != "fine-tune":
        raise APIError(
            400,
            f"File {file_id} has purpose '{stored.purpose}', but {param} requires a file "
            "uploaded with purpose 'fine-tune'.",
            param=param,
        )


def _method(body: dict[str, Any]) -> Requested:
    method = body.get("method")
    legacy = body.get("hyperparameters")
    if method is None:
        return _hyperparameters(legacy, "hyperparameters")
    if not isinstance(method, dict):
        raise invalid_type("method", "an object", method)
    for key in method:
        if key not in ("type", *METHODS):
            raise unknown_parameter(f"method.{key}")
    kind = method.get("type")
    if kind is None:
        raise missing_parameter("method.type")
    if kind not in METHODS:
        raise invalid_value("method.type", kind, METHODS)
    if kind != "supervised":
        raise APIError(
            400,
            f"This trainer runs supervised fine-tuning only; '{kind}' is not supported.",
            param="method.type",
            code="unsupported_value",
        )
    settings = method.get("supervised") or {}
    if not isinstance(settings, dict):
        raise invalid_type("method.supervised", "an object", settings)
    for key in settings:
        if key != "hyperparameters":
            raise unknown_parameter(f"method.supervised.{key}")
    given = settings.get("hyperparameters")
    # `method` wins when both forms are sent; the old form only fills in when it is absent.
    if given is not None:
        return _hyperparameters(given, "method.supervised.hyperparameters")
    return _hyperparameters(legacy, "hyperparameters")


def _hyperparameters(value: Any, param: str) -> Requested:
    if value is None:
        return Requested()
    if not isinstance(value, dict):
        raise invalid_type(param, "an object", value)
    for key in value:
        if key not in ("n_epochs", "batch_size", "learning_rate_multiplier"):
            raise unknown_parameter(f"{param}.{key}")
    return Requested(
        n_epochs=_auto_or_int(value.get("n_epochs", "auto"), f"{param}.n_epochs", 1, 50),
        batch_size=_auto_or_int(value.get("batch_size", "auto"), f"{param}.batch_size", 1, 256),
        learning_rate_multiplier=_auto_or_positive(
            value.get("learning_rate_multiplier", "auto"), f"{param}.learning_rate_multiplier"
        ),
    )


def _auto_or_int(value: Any, param: str, minimum: int, maximum: int) -> int | Auto:
    if value == "auto":
        return "auto"
    if not isinstance(value, int) or isinstance(value, bool):
        raise invalid_type(param, "'auto' or an integer", value)
    if not minimum <= value <= maximum:
        raise out_of_range(param, value, minimum, maximum)
    return value


def _auto_or_positive(value: Any, param: str) -> float | Auto:
    if value == "auto":
        return "auto"
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise invalid_type(param, "'auto' or a number", value)
    if not 0 < value <= 100:
        raise out_of_range(param, float(value), 0, 100)
    return float(value)


def _metadata(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise invalid_type("metadata", "an object", value)
    if len(value) > 16:
        raise APIError(
            400,
            "Invalid 'metadata': too many properties. Expected an object with at most 16 "
            f"properties, but got an object with {len(value)} properties instead.",
            param="metadata",
            code="object_above_max_properties",
        )
    for key, item in value.items():
        if len(key) > 64:
            raise APIError(
                400,
                "Invalid 'metadata': key too long. Expected a key with maximum length 64, but "
                f"got a key with length {len(key)} instead.",
                param="metadata",
                code="invalid_metadata_key",
            )
        if not isinstance(item, str):
            raise invalid_type(f"metadata.{key}", "a string", item)
        if len(item) > 512:
            raise string_length(f"metadata.{key}", item, 0, 512)
    return {str(key): str(item) for key, item in value.items()}
