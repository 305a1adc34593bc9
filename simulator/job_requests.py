"""Checking a create-job request the way OpenAI does before it accepts the job.

Only request problems answer 400 here (unknown model or file, out-of-range values).
Problems inside the training file never do: the job is accepted and fails later.
"""

from __future__ import annotations

import secrets
from typing import Any

from simulator import catalog
from simulator.api_errors import (
    OpenAIError,
    integer_out_of_range,
    invalid_type,
    invalid_value,
    missing_parameter,
    number_not_positive,
    string_length,
    unknown_parameter,
)
from simulator.lifecycle import Auto, Hyperparameters, JobRequest
from simulator.state import SimulatorState

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
    }
)
METHODS = ["supervised", "dpo", "reinforcement"]
MAX_SEED = 2_147_483_647


def parse_job_request(body: dict[str, Any], state: SimulatorState) -> JobRequest:
    for key in body:
        if key not in KNOWN_FIELDS:
            raise unknown_parameter(key)
    model_name = _required_string(body, "model")
    training_file = _required_string(body, "training_file")

    base_snapshot, model, token_limit = _resolve_model(model_name, state)
    method, hyperparameters = _method(body)

    _check_file(state, training_file, "training_file")
    validation_file = body.get("validation_file")
    if validation_file is not None:
        if not isinstance(validation_file, str):
            raise invalid_type("validation_file", "a string", validation_file)
        _check_file(state, validation_file, "validation_file")

    suffix = body.get("suffix")
    if suffix is not None:
        if not isinstance(suffix, str):
            raise invalid_type("suffix", "a string", suffix)
        if not 1 <= len(suffix) <= 64:
            raise string_length("suffix", suffix, 1, 64)

    seed = body.get("seed")
    if seed is None:
        seed = secrets.randbelow(MAX_SEED + 1)
    elif not isinstance(seed, int) or isinstance(seed, bool):
        raise invalid_type("seed", "an integer", seed)
    elif not 0 <= seed <= MAX_SEED:
        raise integer_out_of_range("seed", seed, 0, MAX_SEED)

    return JobRequest(
        model=model,
        base_snapshot=base_snapshot,
        training_file=training_file,
        validation_file=validation_file,
        suffix=suffix,
        seed=seed,
        metadata=_metadata(body.get("metadata")),
        integrations=_integrations(body.get("integrations")),
        method=method,
        hyperparameters=hyperparameters,
        example_token_limit=token_limit,
    )


def _required_string(body: dict[str, Any], field: str) -> str:
    value = body.get(field)
    if value is None:
        raise missing_parameter(field)
    if not isinstance(value, str):
        raise invalid_type(field, "a string", value)
    return value


def _resolve_model(name: str, state: SimulatorState) -> tuple[str, str, int]:
    """(base snapshot, model as the job reports it, per-example token limit)."""
    tuned = state.tuned_models.get(name)
    if tuned is not None:
        info = catalog.resolve(tuned.base_snapshot)
        limit = info.example_token_limit if info else 65_536
        return tuned.base_snapshot, name, limit
    info = catalog.resolve(name)
    if info is None or not info.fine_tunable:
        raise OpenAIError(
            400,
            f"Model {name} is not available for fine-tuning or does not exist.",
            param="model",
            code="model_not_available",
        )
    return info.id, info.id, info.example_token_limit


def _check_file(state: SimulatorState, file_id: str, param: str) -> None:
    stored = state.files.get(file_id)
    if stored is None:
        raise OpenAIError(400, f"invalid {param}: {file_id}", param=param)
    if stored.purpose != "fine-tune":
        raise OpenAIError(
            400,
            f"File {file_id} has purpose '{stored.purpose}', but {param} requires a file "
            "uploaded with purpose 'fine-tune'.",
            param=param,
        )


def _method(body: dict[str, Any]) -> tuple[str, Hyperparameters]:
    method = body.get("method")
    legacy = body.get("hyperparameters")
    if method is None:
        # The deprecated top-level form means supervised training.
        return "supervised", _hyperparameters(legacy, "hyperparameters", dpo=False)
    if not isinstance(method, dict):
        raise invalid_type("method", "an object", method)
    kind = method.get("type")
    if kind is None:
        raise missing_parameter("method.type")
    if kind not in METHODS:
        raise invalid_value("method.type", kind, METHODS)
    if kind == "reinforcement":
        raise OpenAIError(
            400,
            "Reinforcement fine-tuning is not supported by this simulator; use 'supervised' or "
            "'dpo'.",
            param="method.type",
            code="unsupported_value",
        )
    settings = method.get(kind) or {}
    if not isinstance(settings, dict):
        raise invalid_type(f"method.{kind}", "an object", settings)
    given = settings.get("hyperparameters")
    # `method` wins when both forms are sent; the old form only fills in when it is absent.
    source, param = (
        (given, f"method.{kind}.hyperparameters")
        if given is not None
        else (
            legacy,
            "hyperparameters",
        )
    )
    return kind, _hyperparameters(source, param, dpo=kind == "dpo")


def _hyperparameters(value: Any, param: str, *, dpo: bool) -> Hyperparameters:
    if value is None:
        return Hyperparameters(beta="auto" if dpo else None)
    if not isinstance(value, dict):
        raise invalid_type(param, "an object", value)
    known = {"n_epochs", "batch_size", "learning_rate_multiplier"} | ({"beta"} if dpo else set())
    for key in value:
        if key not in known:
            raise unknown_parameter(f"{param}.{key}")
    return Hyperparameters(
        n_epochs=_auto_or_int(value.get("n_epochs", "auto"), f"{param}.n_epochs", 1, 50),
        batch_size=_auto_or_int(value.get("batch_size", "auto"), f"{param}.batch_size", 1, 256),
        learning_rate_multiplier=_auto_or_positive(
            value.get("learning_rate_multiplier", "auto"), f"{param}.learning_rate_multiplier"
        ),
        beta=_auto_or_beta(value.get("beta", "auto"), f"{param}.beta") if dpo else None,
    )


def _auto_or_int(value: Any, param: str, minimum: int, maximum: int) -> int | Auto:
    if value == "auto":
        return "auto"
    if not isinstance(value, int) or isinstance(value, bool):
        raise invalid_type(param, "'auto' or an integer", value)
    if not minimum <= value <= maximum:
        raise integer_out_of_range(param, value, minimum, maximum)
    return value


def _auto_or_positive(value: Any, param: str) -> float | Auto:
    if value == "auto":
        return "auto"
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise invalid_type(param, "'auto' or a number", value)
    if value <= 0:
        raise number_not_positive(param, value)
    return float(value)


def _auto_or_beta(value: Any, param: str) -> float | Auto:
    positive = _auto_or_positive(value, param)
    if positive != "auto" and positive > 2:
        raise OpenAIError(
            400,
            f"Invalid '{param}': number above maximum value. Expected a value <= 2, but got "
            f"{positive} instead.",
            param=param,
            code="decimal_above_max_value",
        )
    return positive


def _metadata(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise invalid_type("metadata", "an object", value)
    if len(value) > 16:
        raise OpenAIError(
            400,
            "Invalid 'metadata': too many properties. Expected an object with at most 16 "
            f"properties, but got an object with {len(value)} properties instead.",
            param="metadata",
            code="object_above_max_properties",
        )
    for key, item in value.items():
        if len(key) > 64:
            raise OpenAIError(
                400,
                f"Invalid 'metadata': key too long. Expected a key with maximum length 64, but "
                f"got a key with length {len(key)} instead.",
                param="metadata",
                code="invalid_metadata_key",
            )
        if not isinstance(item, str):
            raise invalid_type(f"metadata.{key}", "a string", item)
        if len(item) > 512:
            raise string_length(f"metadata.{key}", item, 0, 512)
    return {str(key): str(item) for key, item in value.items()}


def _integrations(value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise invalid_type("integrations", "an array", value)
    if len(value) > 5:
        raise OpenAIError(
            400,
            "Invalid 'integrations': array too long. Expected an array with maximum length 5, "
            f"but got an array with length {len(value)} instead.",
            param="integrations",
            code="array_above_max_length",
        )
    checked: list[dict[str, Any]] = []
    for index, item in enumerate(value):
        param = f"integrations[{index}]"
        if not isinstance(item, dict):
            raise invalid_type(param, "an object", item)
        if item.get("type") != "wandb":
            raise invalid_value(f"{param}.type", item.get("type"), ["wandb"])
        wandb = item.get("wandb")
        if not isinstance(wandb, dict) or not isinstance(wandb.get("project"), str):
            raise missing_parameter(f"{param}.wandb.project")
        checked.append(
            {
                "type": "wandb",
                "wandb": {
                    "project": wandb["project"],
                    "name": wandb.get("name"),
                    "entity": wandb.get("entity"),
                    "tags": list(wandb.get("tags") or []),
                },
            }
        )
    return checked
