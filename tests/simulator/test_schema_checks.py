"""The schema checks themselves: they must catch what is wrong, and know the deviations."""

from __future__ import annotations

import pytest

from tests.simulator import openapi_schemas

JOB = {
    "object": "fine_tuning.job",
    "id": "ftjob-abc",
    "model": "gpt-4o-mini-2024-07-18",
    "created_at": 1,
    "finished_at": None,
    "fine_tuned_model": None,
    "organization_id": "org-1",
    "result_files": [],
    "status": "running",
    "validation_file": None,
    "training_file": "file-1",
    "hyperparameters": {"n_epochs": 3, "batch_size": 1, "learning_rate_multiplier": 1.8},
    "trained_tokens": None,
    "error": None,
    "seed": 1,
}


def test_a_valid_job_passes() -> None:
    assert openapi_schemas.problems("FineTuningJob", JOB) == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("status", "bogus"),
        ("created_at", "yesterday"),
        ("hyperparameters", {"n_epochs": 0}),
        ("hyperparameters", {"learning_rate_multiplier": 0}),
        ("error", {"code": "x"}),
    ],
)
def test_wrong_fields_are_caught(field: str, value: object) -> None:
    assert openapi_schemas.problems("FineTuningJob", {**JOB, field: value})


def test_missing_required_fields_are_caught() -> None:
    body = dict(JOB)
    del body["seed"]
    assert openapi_schemas.problems("FineTuningJob", body)


@pytest.mark.parametrize(
    ("schema", "body"),
    [
        ("FineTuningJob", {**JOB, "status": "paused"}),
        ("FineTuningJob", {**JOB, "error": {}}),
        (
            "OpenAIFile",
            {
                "id": "file-1",
                "object": "file",
                "bytes": 1,
                "created_at": 1,
                "filename": "a.jsonl",
                "purpose": "fine-tune",
                "status": "processed",
                "status_details": None,
            },
        ),
        (
            "ListFilesResponse",
            {"object": "list", "data": [], "first_id": None, "last_id": None, "has_more": False},
        ),
    ],
)
def test_real_api_deviations_fail_the_spec_and_pass_the_widened_schema(
    schema: str, body: dict[str, object]
) -> None:
    assert openapi_schemas.problems(schema, body, strict_spec=True)
    assert openapi_schemas.problems(schema, body) == []


def test_nullable_upload_file_is_understood() -> None:
    upload = {
        "id": "upload_1",
        "object": "upload",
        "bytes": 1,
        "created_at": 1,
        "expires_at": 2,
        "filename": "a.jsonl",
        "purpose": "fine-tune",
        "status": "pending",
        "file": None,
    }
    assert openapi_schemas.problems("Upload", upload) == []
    assert openapi_schemas.problems("Upload", {**upload, "file": {"id": 1}})


def test_every_simulated_route_is_in_the_spec() -> None:
    assert openapi_schemas.schema_for("GET", "/v1/fine_tuning/jobs/ftjob-1/events", 200) == (
        "ListFineTuningJobEventsResponse"
    )
    assert openapi_schemas.schema_for("POST", "/v1/files", 404) == "ErrorResponse"
    with pytest.raises(LookupError):
        openapi_schemas.schema_for("GET", "/v1/nowhere", 200)
