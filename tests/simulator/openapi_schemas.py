"""OpenAI's published schemas (the reference YAML) as JSON Schema validators for responses.

The YAML is OpenAPI 3.1 with some 3.0 leftovers (`nullable`, boolean
`exclusiveMinimum`); those are rewritten into JSON Schema 2020-12. Where the real
API knowingly departs from its own spec, `REAL_API_DEVIATIONS` widens the schema,
and docs/simulator.md lists each one.
"""

from __future__ import annotations

import copy
import functools
import os
import re
from pathlib import Path
from typing import Any

import jsonschema
import yaml

# The reference lives in `shared/` beside the checkout, like the tiktoken files.
REFERENCE_YAML = Path(
    os.environ.get(
        "OPENAI_REFERENCE_YAML",
        Path(__file__).resolve().parents[3] / "shared/reference/openai-finetuning-api.yaml",
    )
)
NULL = {"type": "null"}


def _convert(node: Any) -> Any:
    if isinstance(node, list):
        return [_convert(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _convert(value) for key, value in node.items()}
    if node.get("exclusiveMinimum") is True:
        node["exclusiveMinimum"] = node.pop("minimum", 0)
    if node.get("exclusiveMaximum") is True:
        node["exclusiveMaximum"] = node.pop("maximum")
    if "allOf" in node:
        parts = node["allOf"]
        nullable_only = [part for part in parts if part == {"anyOf": [{}, NULL]}]
        if nullable_only:
            # `allOf: [$ref, {nullable: true}]` means "the ref, or null".
            rest = [part for part in parts if part not in nullable_only]
            node.pop("allOf")
            return {"anyOf": [{"allOf": rest, **node}, NULL]}
    if node.pop("nullable", False):
        return {"anyOf": [node, NULL]}
    return node


# The real API, as observed, where it differs from the spec. The simulator follows
# the real API; these widen the spec just enough to admit it.
def _allow_paused(schemas: dict[str, Any]) -> None:
    schemas["FineTuningJob"]["properties"]["status"]["enum"].append("paused")


def _allow_empty_error(schemas: dict[str, Any]) -> None:
    error = schemas["FineTuningJob"]["properties"]["error"]
    error["anyOf"].append({"type": "object", "maxProperties": 0})


def _allow_null_status_details(schemas: dict[str, Any]) -> None:
    field = schemas["OpenAIFile"]["properties"]["status_details"]
    schemas["OpenAIFile"]["properties"]["status_details"] = {"anyOf": [field, NULL]}


def _allow_null_ids_on_empty_file_list(schemas: dict[str, Any]) -> None:
    for name in ("first_id", "last_id"):
        field = schemas["ListFilesResponse"]["properties"][name]
        schemas["ListFilesResponse"]["properties"][name] = {"anyOf": [field, NULL]}


REAL_API_DEVIATIONS = (
    _allow_paused,
    _allow_empty_error,
    _allow_null_status_details,
    _allow_null_ids_on_empty_file_list,
)


@functools.cache
def _spec() -> dict[str, Any]:
    with REFERENCE_YAML.open(encoding="utf-8") as handle:
        loaded: dict[str, Any] = yaml.safe_load(handle)
    return loaded


@functools.cache
def _root(*, strict_spec: bool) -> dict[str, Any]:
    schemas = _convert(copy.deepcopy(_spec()["components"]["schemas"]))
    if not strict_spec:
        for widen in REAL_API_DEVIATIONS:
            widen(schemas)
    return {"components": {"schemas": schemas}}


@functools.cache
def validator(schema_name: str, *, strict_spec: bool = False) -> jsonschema.Draft202012Validator:
    root = _root(strict_spec=strict_spec)
    if schema_name not in root["components"]["schemas"]:
        raise KeyError(f"no schema named {schema_name} in the reference YAML")
    schema = {"$ref": f"#/components/schemas/{schema_name}", **root}
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def problems(schema_name: str, body: Any, *, strict_spec: bool = False) -> list[str]:
    found = validator(schema_name, strict_spec=strict_spec).iter_errors(body)
    return [f"{'/'.join(map(str, error.absolute_path))}: {error.message}" for error in found]


@functools.cache
def _routes() -> list[tuple[str, re.Pattern[str], str | None]]:
    """(method, path pattern, schema of the 200 body) for every operation in the YAML."""
    routes: list[tuple[str, re.Pattern[str], str | None]] = []
    for template, operations in _spec()["paths"].items():
        pattern = re.compile("^/v1" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$")
        for method, operation in operations.items():
            content = operation.get("responses", {}).get("200", {}).get("content", {})
            schema = content.get("application/json", {}).get("schema", {})
            ref = schema.get("$ref")
            routes.append((method.upper(), pattern, ref.rsplit("/", 1)[-1] if ref else None))
    return routes


def schema_for(method: str, path: str, status: int) -> str | None:
    """The schema a response must match; raises if the spec has no such operation."""
    if status >= 400:
        return "ErrorResponse"
    for route_method, pattern, schema in _routes():
        if route_method == method and pattern.match(path):
            return schema
    raise LookupError(f"the reference spec has no operation {method} {path}")


def webhook_schema(event_type: str) -> str:
    for webhook in _spec()["webhooks"].values():
        ref = webhook["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        name = ref.rsplit("/", 1)[-1]
        enum = _spec()["components"]["schemas"][name]["properties"]["type"]["enum"]
        if event_type in enum:
            return str(name)
    raise LookupError(event_type)
