"""The OpenAPI document as a contract: names, tags, bodies, errors, examples, security.

Everything here reads a fresh export (`service.openapi_export.export()`), the
same document `make openapi` writes; the last test checks that the committed
`openapi/openapi.json` is that document.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import cache
from typing import Any

import pytest

from service.openapi_export import DEFAULT_PATH, export

PROBLEM = "application/problem+json"
PASCAL_CASE = re.compile(r"^[A-Z][a-z0-9]+(?:[A-Z][a-z0-9]*)*$")
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
# Routes anyone may call; everything else needs `Authorization: Bearer <key>`.
PUBLIC = {"GetHealth", "GetReadiness", "ReceiveOpenAIWebhook", "ReceiveProviderWebhook"}
# Operations that read a request body, and the media types they must declare.
BODIES = {
    "CreateDataset": {"multipart/form-data", "application/json"},
    "ValidateDataset": {"multipart/form-data", "application/json"},
    "CreateJob": {"application/json"},
    "CreateChatCompletion": {"application/json"},
    "CompareChatModels": {"application/json"},
    "CreateEvaluation": {"application/json"},
    "CreateWebhookEndpoint": {"application/json"},
    "UpdateWebhookEndpoint": {"application/json"},
    "ReceiveOpenAIWebhook": {"application/json"},
    "ReceiveProviderWebhook": {"application/json"},
    "OpenAICreateFile": {"multipart/form-data"},
    "OpenAICreateFineTuningJob": {"application/json"},
    "OpenAICreateChatCompletion": {"application/json"},
}
# /v1 answers errors in OpenAI's body (the SDK reads it), not as problem documents.
FACADE_PREFIX = "/v1/"


@cache
def document() -> dict[str, Any]:
    return json.loads(export())


def operations() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document()["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                yield method.upper(), path, operation


def operation_ids() -> list[str]:
    return [op.get("operationId", f"{method} {path}") for method, path, op in operations()]


def by_id(operation_id: str) -> tuple[str, str, dict[str, Any]]:
    for method, path, operation in operations():
        if operation.get("operationId") == operation_id:
            return method, path, operation
    raise AssertionError(f"no operation {operation_id}")


def resolve(node: dict[str, Any]) -> dict[str, Any]:
    """Follow `$ref`s (and a lone `allOf: [$ref]`, Litestar's way to attach examples)."""
    while "$ref" in node or len(node.get("allOf", [])) == 1:
        if "allOf" in node:
            node = node["allOf"][0]
            continue
        name = node["$ref"].removeprefix("#/components/schemas/")
        node = document()["components"]["schemas"][name]
    return node


def is_public(operation: dict[str, Any]) -> bool:
    return operation.get("security") == [{}]


def test_the_document_lists_every_route() -> None:
    # Guards the parametrized tests below against passing on an empty document.
    ids = set(operation_ids())
    assert len(ids) >= 30
    assert {"CreateDataset", "CreateJob", "GetJob", "CreateChatCompletion"} <= ids
    assert set(BODIES) <= ids
    assert PUBLIC <= ids


def test_operation_ids_are_unique_pascal_case() -> None:
    ids = operation_ids()
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    bad = [i for i in ids if not PASCAL_CASE.match(i)]
    assert not bad, f"not PascalCase (or missing): {bad}"


def test_bearer_auth_is_the_default_and_only_health_and_inbound_webhooks_are_public() -> None:
    schemes = document()["components"]["securitySchemes"]
    assert schemes["BearerAuth"]["type"] == "http"
    assert schemes["BearerAuth"]["scheme"] == "bearer"
    assert document()["security"] == [{"BearerAuth": []}]
    public = {op["operationId"] for _, _, op in operations() if is_public(op)}
    assert public == PUBLIC


@pytest.mark.parametrize("operation_id", operation_ids())
def test_operation_has_tags_and_summary(operation_id: str) -> None:
    _, _, operation = by_id(operation_id)
    declared = {tag["name"] for tag in document()["tags"]}
    assert operation.get("tags"), "no tags"
    assert set(operation["tags"]) <= declared, f"undeclared tags {operation['tags']}"
    assert operation.get("summary"), "no summary"


def is_facade(path: str) -> bool:
    return path.startswith(FACADE_PREFIX)


@pytest.mark.parametrize("operation_id", operation_ids())
def test_error_responses_are_problem_documents_with_examples(operation_id: str) -> None:
    _, path, operation = by_id(operation_id)
    errors = {code: r for code, r in operation["responses"].items() if code[0] in "45"}
    if is_facade(path):
        assert errors, "no error responses documented"
        for code, response in errors.items():
            media = response.get("content", {}).get("application/json")
            assert media is not None, f"{code} is not documented as OpenAI's JSON error"
            schema = resolve(media["schema"])
            assert set(schema["required"]) == {"error"}, schema
            detail = resolve(schema["properties"]["error"])
            assert set(detail["properties"]) == {"message", "type", "param", "code"}
            examples = list(media.get("examples", {}).values())
            assert examples, f"{code} has no example"
            for example in examples:
                # The document leaves out null members of an example (`code` of a 404).
                shown = set(example["value"]["error"])
                assert {"message", "type"} <= shown <= set(detail["properties"]), shown
        return
    if operation_id != "GetHealth":  # the liveness probe touches nothing that can fail
        assert errors, "no error responses documented"
    for code, response in errors.items():
        content = response.get("content", {})
        assert set(content) == {PROBLEM}, f"{code} is documented as {sorted(content)}"
        media = content[PROBLEM]
        assert resolve(media["schema"]) is resolve({"$ref": "#/components/schemas/Problem"})
        examples = list(media.get("examples", {}).values())
        assert examples, f"{code} has no example"
        for example in examples:
            assert example["value"]["status"] == int(code), f"{code} example says otherwise"


@pytest.mark.parametrize("operation_id", operation_ids())
def test_expected_error_statuses_are_documented(operation_id: str) -> None:
    method, path, operation = by_id(operation_id)
    documented = {int(code) for code in operation["responses"] if code[0] in "45"}
    expected: set[int] = set()
    if not is_public(operation):
        expected |= {401, 429}  # every authenticated request spends the tenant's rate budget
    if "{" in path:
        expected |= {404}
    if operation.get("parameters") or operation_id in BODIES:
        expected |= {400}
    if operation_id in BODIES:
        expected |= {413}
    if "multipart/form-data" in BODIES.get(operation_id, set()) and not is_facade(path):
        expected |= {415}  # /v1 answers a wrong media type with 400, as OpenAI does
    missing = expected - documented
    assert not missing, f"{method} {path} does not document {sorted(missing)}"


@pytest.mark.parametrize("operation_id", operation_ids())
def test_one_success_response_with_a_schema(operation_id: str) -> None:
    _, _, operation = by_id(operation_id)
    success = {code: r for code, r in operation["responses"].items() if code.startswith("2")}
    assert len(success) == 1, f"success responses: {sorted(success)}"
    (code, response), *_ = success.items()
    if code == "204":
        assert not response.get("content")
        return
    content = response.get("content", {})
    assert content, f"{code} has no content"
    for media_type, media in content.items():
        assert media.get("schema") is not None, f"{code} {media_type} has no schema"
        if media_type == "application/json":
            assert resolve(media["schema"]), f"{code} {media_type} has an empty schema"


@pytest.mark.parametrize("operation_id", sorted(BODIES))
def test_request_body_is_declared_with_a_schema_and_an_example(operation_id: str) -> None:
    _, _, operation = by_id(operation_id)
    body = operation.get("requestBody")
    assert body, "no requestBody"
    content = body["content"]
    assert set(content) == BODIES[operation_id]
    for media_type, media in content.items():
        schema = resolve(media["schema"])
        assert schema.get("type") == "object", f"{media_type}: {schema}"
        assert schema.get("properties"), f"{media_type} schema has no properties"
        if media_type == "application/json":
            examples = (
                media.get("examples")
                or media.get("example")
                or media["schema"].get("examples")
                or schema.get("examples")
            )
            assert examples, f"{media_type} body has no example"


@pytest.mark.parametrize("operation_id", operation_ids())
def test_no_body_where_the_route_reads_none(operation_id: str) -> None:
    _, _, operation = by_id(operation_id)
    if operation_id not in BODIES:
        assert "requestBody" not in operation


@pytest.mark.parametrize("operation_id", operation_ids())
def test_path_parameters_are_declared(operation_id: str) -> None:
    _, path, operation = by_id(operation_id)
    in_path = set(re.findall(r"{(\w+)}", path))
    declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
    assert in_path == declared
    for parameter in operation.get("parameters", []):
        if parameter["in"] == "path":
            assert parameter["required"] is True


def test_list_routes_cap_limit_and_page_with_after() -> None:
    lists = [
        (operation_id, operation)
        for _, _, operation in operations()
        if (operation_id := operation["operationId"]).startswith("List")
    ]
    assert len(lists) >= 5
    for operation_id, operation in lists:
        params = {p["name"]: p for p in operation.get("parameters", [])}
        if operation_id == "ListJobCheckpoints":  # a handful per job, never paged
            continue
        assert "after" in params, operation_id
        assert params["limit"]["schema"]["maximum"] <= 100, operation_id
        assert params["limit"]["schema"]["minimum"] >= 1, operation_id


def test_problem_schema_is_rfc9457_with_sane_examples() -> None:
    problem = document()["components"]["schemas"]["Problem"]
    assert {"type", "title", "status", "detail"} <= set(problem["required"])
    for example in problem.get("examples", []):
        assert 400 <= example["status"] <= 599, f"nonsense example in Problem: {example}"


def test_secrets_are_marked_as_shown_once() -> None:
    endpoint = document()["components"]["schemas"]["EndpointWithSecret"]
    assert "secret" in endpoint["properties"]
    # Only the create and rotate answers carry the secret; reads never do.
    for schema in ("Endpoint", "Delivery", "DeliveryWithAttempts", "Job", "Dataset"):
        assert "secret" not in document()["components"]["schemas"][schema]["properties"]
    carrying = set()
    for _, _, operation in operations():
        for response in operation["responses"].values():
            for media in response.get("content", {}).values():
                if media.get("schema", {}).get("$ref", "").endswith("/EndpointWithSecret"):
                    carrying.add(operation["operationId"])
    assert carrying == {"CreateWebhookEndpoint", "RotateWebhookSecret"}


def test_committed_document_is_a_fresh_export() -> None:
    committed = DEFAULT_PATH.read_text(encoding="utf-8")
    assert committed == export(), "openapi/openapi.json is stale: run `make openapi`"
