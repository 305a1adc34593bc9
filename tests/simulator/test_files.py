"""Files and the Uploads API, as the SDK sees them."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.simulator.conftest import Target
from tests.simulator.polling import wait_for_job
from tests.simulator.seed_data import chat_examples


def test_upload_list_retrieve_download_delete(target: Target, client: openai.OpenAI) -> None:
    content = chat_examples(12)
    first = client.files.create(file=("a.jsonl", content), purpose="fine-tune")
    second = client.files.create(file=("b.jsonl", content), purpose="fine-tune")
    if target.is_service:
        assert first.id.startswith("ds_")  # a file is a dataset, under the dataset's id
    else:
        assert first.id.startswith("file-")
        assert len(first.id) == len("file-") + 24
    assert (first.object, first.purpose, first.filename) == ("file", "fine-tune", "a.jsonl")

    listed = client.files.list()
    assert [item.id for item in listed.data] == [second.id, first.id]  # newest first
    assert client.files.retrieve(first.id).bytes == len(content)
    assert client.files.content(first.id).content == content

    deleted = client.files.delete(first.id)
    assert (deleted.id, deleted.deleted) == (first.id, True)
    assert [item.id for item in client.files.list().data] == [second.id]


def test_list_files_filters_by_purpose_and_pages(target: Target, client: openai.OpenAI) -> None:
    ids = [
        client.files.create(file=(f"{i}.jsonl", chat_examples(1)), purpose="fine-tune").id
        for i in range(3)
    ]
    if target.is_service:
        # The service keeps training files only.
        with pytest.raises(openai.BadRequestError):
            client.files.create(file=("notes.txt", b"hello"), purpose="assistants")
        assert client.files.list(purpose="assistants").data == []
    else:
        client.files.create(file=("notes.txt", b"hello"), purpose="assistants")
    page = client.files.list(purpose="fine-tune", limit=2)
    assert [item.id for item in page.data] == [ids[2], ids[1]]
    assert page.has_more is True
    rest = client.files.list(purpose="fine-tune", limit=2, after=ids[1])
    assert [item.id for item in rest.data] == [ids[0]]
    assert rest.has_more is False
    oldest_first = client.files.list(purpose="fine-tune", order="asc")
    assert [item.id for item in oldest_first.data] == ids


def test_a_file_that_is_not_jsonl_is_refused_at_upload(
    target: Target, client: openai.OpenAI
) -> None:
    bad = b'{"messages": []}\nuser,assistant\n'
    with pytest.raises(openai.BadRequestError) as caught:
        client.files.create(file=("data.csv", bad), purpose="fine-tune")
    assert caught.value.status_code == 400
    assert caught.value.body == {
        "message": "Expected file to have JSONL format, where every line is a valid JSON "
        "dictionary. Line 2 is not a dictionary.",
        "type": "invalid_request_error",
        "param": "file",
        "code": None,
    }
    if not target.is_service:
        # Other purposes take any bytes (the service keeps training files only).
        assert client.files.create(file=("data.csv", bad), purpose="assistants").bytes == len(bad)


def test_unknown_file_is_a_404_naming_the_id(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.files.retrieve("file-doesnotexist")
    assert caught.value.body == {
        "message": "No such File object: file-doesnotexist",
        "type": "invalid_request_error",
        "param": "id",
        "code": None,
    }
    with pytest.raises(openai.NotFoundError):
        client.files.delete("file-doesnotexist")
    with pytest.raises(openai.NotFoundError):
        client.files.content("file-doesnotexist")


def test_bad_purpose_is_a_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.files.create(file=("a.jsonl", b"{}\n"), purpose="nonsense")  # type: ignore[arg-type]
    assert caught.value.code == "invalid_value"
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["param"] == "purpose"


@pytest.mark.simulator_only  # the service has no Uploads API: one multipart file
def test_uploads_api_assembles_parts_into_a_usable_file(client: openai.OpenAI) -> None:
    content = chat_examples(40)
    upload = client.uploads.upload_file_chunked(
        file=content,
        filename="big.jsonl",
        bytes=len(content),
        mime_type="text/jsonl",
        purpose="fine-tune",
        part_size=1000,
    )
    assert upload.status == "completed"
    assert upload.file is not None
    assert upload.file.bytes == len(content)
    assert client.files.content(upload.file.id).content == content

    job = client.fine_tuning.jobs.create(training_file=upload.file.id, model="gpt-4.1-nano")
    assert wait_for_job(client, job.id).status == "succeeded"


@pytest.mark.simulator_only  # the service has no Uploads API: one multipart file
def test_upload_parts_complete_in_the_order_given(client: openai.OpenAI) -> None:
    upload = client.uploads.create(
        filename="x.jsonl", bytes=20, mime_type="text/jsonl", purpose="fine-tune"
    )
    assert upload.status == "pending"
    second = client.uploads.parts.create(upload.id, data=b'{"b": 2}\n')
    first = client.uploads.parts.create(upload.id, data=b'{"a": 1}\n\n\n')
    assert first.object == "upload.part"
    done = client.uploads.complete(upload.id, part_ids=[first.id, second.id])
    assert done.file is not None
    assert client.files.content(done.file.id).content == b'{"a": 1}\n\n\n{"b": 2}\n'
    with pytest.raises(openai.BadRequestError):
        client.uploads.parts.create(upload.id, data=b"more")


@pytest.mark.simulator_only  # the service has no Uploads API: one multipart file
def test_upload_refuses_wrong_byte_count_and_non_jsonl(client: openai.OpenAI) -> None:
    upload = client.uploads.create(
        filename="x.jsonl", bytes=100, mime_type="text/jsonl", purpose="fine-tune"
    )
    part = client.uploads.parts.create(upload.id, data=b'{"a": 1}\n')
    with pytest.raises(openai.BadRequestError) as caught:
        client.uploads.complete(upload.id, part_ids=[part.id])
    assert "does not match" in caught.value.message

    csv_upload = client.uploads.create(
        filename="x.csv", bytes=4, mime_type="text/jsonl", purpose="fine-tune"
    )
    csv_part = client.uploads.parts.create(csv_upload.id, data=b"a,b\n")
    with pytest.raises(openai.BadRequestError) as caught:
        client.uploads.complete(csv_upload.id, part_ids=[csv_part.id])
    assert caught.value.message.endswith("Line 1 is not a dictionary.")


@pytest.mark.simulator_only  # the service has no Uploads API: one multipart file
def test_cancelled_upload_takes_no_more_parts(client: openai.OpenAI) -> None:
    upload = client.uploads.create(
        filename="x.jsonl", bytes=10, mime_type="text/jsonl", purpose="fine-tune"
    )
    assert client.uploads.cancel(upload.id).status == "cancelled"
    with pytest.raises(openai.BadRequestError):
        client.uploads.complete(upload.id, part_ids=[])
    with pytest.raises(openai.NotFoundError):
        client.uploads.cancel("upload_nope")


def test_missing_api_key_is_a_401_in_openai_shape(target: Target) -> None:
    response = httpx.get(f"{target.base_url}/files")
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert (error["param"], error["code"]) == (None, None)
    if target.is_service:
        assert "API key" in error["message"]
        wrong = httpx.get(f"{target.base_url}/files", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert wrong.json()["error"]["code"] == "invalid_api_key"
        ok = httpx.get(f"{target.base_url}/files", headers=target.headers)
        assert ok.status_code == 200
        return
    assert error["message"].startswith("You didn't provide an API key.")
    # Any key at all is accepted.
    ok = httpx.get(f"{target.base_url}/files", headers={"Authorization": "Bearer whatever"})
    assert ok.status_code == 200
    assert ok.headers["x-request-id"].startswith("req_")


def test_unknown_path_answers_invalid_url(target: Target) -> None:
    response = httpx.get(f"{target.base_url}/nothing/here", headers=target.headers)
    assert response.status_code == 404
    assert response.json()["error"]["message"] == "Invalid URL (GET /v1/nothing/here)"


def test_broken_json_body_is_a_400(target: Target) -> None:
    response = httpx.post(
        f"{target.base_url}/fine_tuning/jobs",
        content=b"{not json",
        headers={**target.headers, "content-type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith(
        "We could not parse the JSON body of your request."
    )
