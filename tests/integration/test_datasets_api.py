"""`/datasets` through the real app and Redis: conversion, validation, storage."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tests.conftest import auth
from tests.seeds import (
    SYSTEM_PROMPT,
    chat_examples,
    cookbook_tokens,
    hiroyuki_csv,
    jsonl,
    three_examples_jsonl,
)


def upload(filename: str, content: bytes | str, **fields: str) -> dict:
    data = content.encode() if isinstance(content, str) else content
    return {"files": {"file": (filename, data, "application/octet-stream")}, "data": fields}


def stored_files(data_dir: Path) -> list[Path]:
    return [p for p in data_dir.rglob("*") if p.is_file()]


async def test_seed_csv_becomes_29_chat_examples_with_the_system_prompt(client, data_dir) -> None:
    response = await client.post(
        "/datasets",
        headers=auth(),
        **upload("hiroyuki.csv", hiroyuki_csv(), system_prompt=SYSTEM_PROMPT, name="hiroyuki"),
    )
    assert response.status_code == 201, response.text
    dataset = response.json()
    assert response.headers["location"].endswith(f"/datasets/{dataset['id']}")
    assert dataset["id"].startswith("ds_")
    assert dataset["status"] == "ready"
    assert dataset["format"] == "csv"
    assert dataset["example_count"] == 29
    # The fingerprint of the file as sent, not of the converted lines.
    assert dataset["sha256"] == hashlib.sha256(hiroyuki_csv().encode()).hexdigest()

    content = await client.get(f"/datasets/{dataset['id']}/content", headers=auth())
    assert content.status_code == 200
    examples = [json.loads(line) for line in content.text.splitlines()]
    assert len(examples) == 29
    for example in examples:
        roles = [m["role"] for m in example["messages"]]
        assert roles == ["system", "user", "assistant"]
        assert example["messages"][0]["content"] == SYSTEM_PROMPT
    assert examples[5]["messages"][1]["content"] == "自己肯定感の高めかた"
    # The service's count equals the cookbook rule computed independently here.
    assert dataset["token_count"] == cookbook_tokens(examples)
    estimate = dataset["estimate"]
    assert estimate["n_epochs"] == 3  # 29 * 3 < 100 -> min(25, 100 // 29) = 3
    assert estimate["billed_tokens"] == 3 * dataset["token_count"]
    assert estimate["cost_usd"] > 0


async def test_three_examples_are_refused_naming_the_minimum_and_nothing_is_stored(
    client, data_dir
) -> None:
    before = stored_files(data_dir)
    response = await client.post(
        "/datasets", headers=auth(), **upload("buta.jsonl", three_examples_jsonl())
    )
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    codes = [e["code"] for e in problem["errors"]]
    assert codes == ["too_few_examples"]
    assert "10" in problem["errors"][0]["message"]
    assert "3 example" in problem["errors"][0]["message"]
    listing = await client.get("/datasets", headers=auth())
    assert listing.json()["data"] == []
    assert stored_files(data_dir) == before


async def test_faults_on_known_lines_are_reported_by_line_path_and_code(client) -> None:
    lines = [json.dumps(e) for e in chat_examples(12)]
    lines[2] = "{not json"
    lines[4] = json.dumps({"messages": [{"role": "user", "content": "hi"}, {"content": "x"}]})
    lines[6] = json.dumps(
        {"messages": [{"role": "wizard", "content": "hi"}, {"role": "assistant", "content": "x"}]}
    )
    lines[9] = json.dumps({"messages": [{"role": "user", "content": "only a question"}]})
    response = await client.post(
        "/datasets", headers=auth(), **upload("faults.jsonl", "\n".join(lines) + "\n")
    )
    assert response.status_code == 422
    found = {(e["line"], e["path"], e["code"]) for e in response.json()["errors"]}
    assert found == {
        (3, None, "invalid_json"),
        (5, "messages[1].role", "message_missing_key"),
        (7, "messages[0].role", "unrecognized_role"),
        (10, "messages", "example_missing_assistant_message"),
    }


async def test_messy_table_with_bom_crlf_quotes_and_mapped_columns(client) -> None:
    rows = ["質問,回答"] + [f'"q{i}, with comma","line one\r\nline two {i}"' for i in range(11)]
    body = "\ufeff" + "\r\n".join(rows) + "\r\n"
    response = await client.post(
        "/datasets",
        headers=auth(),
        **upload("messy.csv", body, user_column="質問", assistant_column="回答"),
    )
    assert response.status_code == 201, response.text
    dataset = response.json()
    content = await client.get(f"/datasets/{dataset['id']}/content", headers=auth())
    first = json.loads(content.text.splitlines()[0])
    assert first["messages"][0] == {"role": "user", "content": "q0, with comma"}
    assert first["messages"][1]["content"] == "line one\r\nline two 0"


async def test_empty_answer_cell_is_reported_by_row(client) -> None:
    rows = ["user,assistant"] + [f"q{i},a{i}" for i in range(11)]
    rows[4] = "q3,"
    response = await client.post("/datasets", headers=auth(), **upload("t.csv", "\n".join(rows)))
    assert response.status_code == 422
    errors = response.json()["errors"]
    assert [(e["line"], e["path"], e["code"]) for e in errors] == [
        (5, "assistant", "missing_content")
    ]


async def test_non_utf8_file_gets_a_clear_error_not_a_crash(client) -> None:
    rows = "user,assistant\n" + "".join(f"質問{i},回答{i}\n" for i in range(12))
    response = await client.post(
        "/datasets", headers=auth(), **upload("sjis.csv", rows.encode("shift_jis"))
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["code"] == "encoding"


async def test_json_body_with_examples_and_a_validation_split(client) -> None:
    examples = [{"user": f"q{i}", "assistant": f"a{i}"} for i in range(40)]
    response = await client.post(
        "/datasets",
        headers=auth(),
        json={
            "name": "from code",
            "examples": examples,
            "system_prompt": "Be brief.",
            "validation_fraction": 0.25,
            "seed": 7,
        },
    )
    assert response.status_code == 201, response.text
    training = response.json()
    validation_id = training["validation_dataset_id"]
    assert validation_id
    validation = (await client.get(f"/datasets/{validation_id}", headers=auth())).json()
    assert validation["role"] == "validation"
    assert validation["training_dataset_id"] == training["id"]
    assert training["example_count"] + validation["example_count"] == 40
    assert validation["example_count"] == 10


async def test_dry_run_reports_and_stores_nothing(client, data_dir) -> None:
    before = stored_files(data_dir)
    response = await client.post(
        "/datasets/validate", headers=auth(), **upload("three.jsonl", three_examples_jsonl())
    )
    assert response.status_code == 200
    report = response.json()
    assert report["ok"] is False
    assert report["errors"][0]["code"] == "too_few_examples"
    good = await client.post(
        "/datasets/validate", headers=auth(), **upload("ok.jsonl", jsonl(chat_examples(10)))
    )
    assert good.json()["ok"] is True
    assert good.json()["estimate"]["n_epochs"] == 10
    assert (await client.get("/datasets", headers=auth())).json()["data"] == []
    assert stored_files(data_dir) == before


async def test_another_tenants_dataset_answers_404(client) -> None:
    created = await client.post(
        "/datasets", headers=auth("tenant-a"), **upload("ok.jsonl", jsonl(chat_examples(10)))
    )
    dataset_id = created.json()["id"]
    for method, path in [
        ("GET", f"/datasets/{dataset_id}"),
        ("GET", f"/datasets/{dataset_id}/content"),
        ("DELETE", f"/datasets/{dataset_id}"),
    ]:
        response = await client.request(method, path, headers=auth("tenant-b"))
        assert response.status_code == 404, (method, path)
    assert (
        await client.get(f"/datasets/{dataset_id}", headers=auth("tenant-a"))
    ).status_code == 200


async def test_delete_removes_the_dataset_and_its_file(client, data_dir) -> None:
    created = await client.post(
        "/datasets", headers=auth(), **upload("ok.jsonl", jsonl(chat_examples(10)))
    )
    dataset_id = created.json()["id"]
    assert (await client.delete(f"/datasets/{dataset_id}", headers=auth())).status_code == 204
    assert (await client.get(f"/datasets/{dataset_id}", headers=auth())).status_code == 404
    assert not any(dataset_id in p.name for p in stored_files(data_dir))


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        (
            {"content": b"", "headers": {"content-type": "text/plain"}},
            415,
            "unsupported_media_type",
        ),
        ({"files": {"name": (None, "a form without a file")}}, 400, "missing_file"),
        ({"json": {"examples": []}}, 400, "invalid_body"),
    ],
)
async def test_malformed_requests_get_clear_problems(client, kwargs, status, code) -> None:
    headers = {**auth(), **kwargs.pop("headers", {})}
    response = await client.post("/datasets", headers=headers, **kwargs)
    assert response.status_code == status, response.text
    assert response.json()["code"] == code


async def test_unknown_model_is_named(client) -> None:
    response = await client.post(
        "/datasets", headers=auth(), **upload("ok.jsonl", jsonl(chat_examples(10)), model="gpt-9")
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["path"] == "model"


async def test_missing_key_is_401_with_a_challenge(client) -> None:
    response = await client.get("/datasets")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    response = await client.get("/datasets", headers={"Authorization": "Bearer wrong"})
    assert response.status_code == 401
